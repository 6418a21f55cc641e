"""Fleet queries on any store: which initializations match, and their recorded durations.

Stores with the optional ``QueryableStore`` methods answer from their index; for any other
store the same answer is computed here by reading every log (correct, just slower).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from llm_init.errors import LLMInitError
from llm_init.replay import ReplayedInitialization, read_events, replay
from llm_init.stores.base import EventStore, InitQuery, QueryableStore
from llm_init.stores.index import DURATION_TOPICS, TOTAL, index_rows, matches, merge, ordered

_ALL = 10**9
_SPAN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class QueryError(LLMInitError, ValueError):
    """A fleet query option cannot be understood (a time, a label filter)."""


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """``90s``, ``15m``, ``1h``, ``2d``, ``1w`` ago, or an ISO time (UTC unless it says)."""
    found = _SPAN.match(text)
    if found:
        amount, unit = float(found.group(1)), found.group(2)
        return (now or datetime.now(UTC)) - timedelta(seconds=amount * _UNITS[unit])
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise QueryError(f"{text!r} is neither a span like 1h, 30m, 2d nor an ISO time") \
            from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_labels(pairs: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``key=value`` strings as the pairs ``InitQuery.labels`` takes."""
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise QueryError(f"label filter {pair!r} is not key=value")
        out.append((key, value))
    return tuple(out)


def query_initializations(store: EventStore, query: InitQuery) -> list[str]:
    """Ids of the matching inits, in the query's order, at most its limit."""
    if isinstance(store, QueryableStore):
        return store.query_initializations(query)
    rows = []
    for init_id in store.list_init_ids(_ALL):
        found = index_rows(store.read(init_id))
        if found:
            row = found[0]
            for more in found[1:]:
                row = merge(row, more)
            if matches(row, query):
                rows.append(row)
    return ordered(rows, query)


def find_initializations(store: EventStore, query: InitQuery) -> list[ReplayedInitialization]:
    """The matching inits, each replayed from its log (liveness judged at ``query.now``)."""
    return [replay(read_events(store, i), now=query.now)
            for i in query_initializations(store, query)]


def query_durations(store: EventStore, query: InitQuery) -> list[tuple[str, float]]:
    """``(phase, seconds)`` of every completed phase and ``("total", seconds)`` of every
    completed init among the matching ones."""
    if isinstance(store, QueryableStore):
        return store.query_durations(query)
    unlimited = dataclasses.replace(query, limit=None)
    out = []
    for init_id in query_initializations(store, unlimited):
        for r in store.read(init_id):
            if r.topic in DURATION_TOPICS:
                body = json.loads(r.state)
                out.append((body["phase"] if r.topic == "PhaseCompleted" else TOTAL,
                            float(body["duration_s"])))
    return out
