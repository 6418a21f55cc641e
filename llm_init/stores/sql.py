"""SQL shared by the SQLite and PostgreSQL stores: the index upsert, fleet filters, id ranges."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from llm_init.stores.base import InitQuery
from llm_init.stores.index import utc_text

INDEX_COLUMNS = ("init_id", "model_id", "started_at", "host", "node_id", "application",
                 "deployment", "labels", "outcome", "duration_s", "alive_until")
_KEPT = ("model_id", "started_at", "host", "node_id", "application", "deployment", "labels",
         "duration_s", "alive_until")


def index_upsert(table: str, ph: Callable[[str], str],
                 columns: tuple[str, ...] = INDEX_COLUMNS) -> str:
    """The upsert that applies ``index.merge`` in SQL: the fields the new row knows win.
    ``ph`` renders a named placeholder; ``columns`` (default: all) serves migrations that
    fill the table as an older version had it."""
    values = ", ".join(f"coalesce({ph('outcome')}, 'running')" if c == "outcome" else ph(c)
                       for c in columns)
    kept = ",\n    ".join(f"{c} = coalesce(excluded.{c}, {table}.{c})" for c in _KEPT
                          if c in columns)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})\n"
        f"ON CONFLICT (init_id) DO UPDATE SET\n    {kept},\n"
        f"    outcome = coalesce({ph('outcome')}, {table}.outcome)"
    )


def where(query: InitQuery, ph: Callable[[str], str], label_match: Callable[[str, str], str],
          time_value: Callable[[Any], Any] = utc_text, alias: str = "i"
          ) -> tuple[str, dict[str, Any]]:
    """The ``WHERE`` clause (and its parameters) selecting the index rows ``query`` means."""
    clauses = [f"{alias}.started_at IS NOT NULL"]
    params: dict[str, Any] = {}
    for name in ("model_id", "host", "node_id", "application", "deployment"):
        value = getattr(query, name)
        if value is not None:
            clauses.append(f"{alias}.{name} = {ph(name)}")
            params[name] = value
    if query.outcome is not None:
        clauses.append(_outcome_clause(query.outcome, ph, alias))
        if query.outcome in ("running", "abandoned"):
            params["now"] = time_value(query.now or datetime.now(UTC))
        else:
            params["outcome"] = query.outcome
    if query.since is not None:
        clauses.append(f"{alias}.started_at >= {ph('since')}")
        params["since"] = time_value(query.since)
    if query.until is not None:
        clauses.append(f"{alias}.started_at < {ph('until')}")
        params["until"] = time_value(query.until)
    for n, (key, value) in enumerate(query.labels):
        clauses.append(label_match(ph(f"label_key_{n}"), ph(f"label_value_{n}")))
        params[f"label_key_{n}"], params[f"label_value_{n}"] = key, value
    return " AND ".join(clauses), params


def _outcome_clause(outcome: str, ph: Callable[[str], str], alias: str) -> str:
    """What ``index.outcome_at`` computes, in SQL: running rows past ``alive_until`` at
    ``now`` are abandoned, not running."""
    a = alias
    if outcome == "running":
        return (f"{a}.outcome = 'running' AND ({a}.alive_until IS NULL "
                f"OR {a}.alive_until >= {ph('now')})")
    if outcome == "abandoned":
        return (f"({a}.outcome = 'abandoned' OR ({a}.outcome = 'running' "
                f"AND {a}.alive_until < {ph('now')}))")
    return f"{a}.outcome = {ph('outcome')}"


def order_by(query: InitQuery, alias: str = "i") -> str:
    """The order ``index.ordered`` sorts by, in SQL."""
    if query.order == "slowest":
        return (f"ORDER BY ({alias}.duration_s IS NULL), {alias}.duration_s DESC, "
                f"{alias}.init_id")
    return f"ORDER BY {alias}.started_at DESC, {alias}.init_id DESC"


def prefix_upper(prefix: str) -> str | None:
    """The least string above every string starting with ``prefix`` (code point order, which
    is SQLite's and PostgreSQL's "C" order of UTF-8 text); ``None`` when there is none."""
    while prefix and prefix[-1] == chr(0x10FFFF):
        prefix = prefix[:-1]
    if not prefix:
        return None
    last = ord(prefix[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # surrogates cannot be encoded: skip to the next scalar
        last = 0xE000
    return prefix[:-1] + chr(last)
