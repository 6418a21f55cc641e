"""The per-initialization index row the stores keep beside the log, derived from its records.

It is a projection, written in the same transaction as the events it is derived from, so fleet
queries (model, outcome, start time, labels, slowest) read one small row per init instead of
replaying every log. Only ``InitializationStarted``, the terminal events and the heartbeats
touch it: two writes per init, and one per heartbeat (every few seconds) while it runs,
whatever the length of its log. The events stay the source of truth; a store can rebuild the
index from them at any time.

``alive_until`` is the last heartbeat (or the start) plus the abandonment bound
(``llm_init.liveness``): a ``running`` row past it reads as ``abandoned``, which queries
compute at their ``now``, as replay does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from llm_init import labels as label_keys
from llm_init import liveness
from llm_init.stores.base import InitQuery
from llm_init.stores.codec import StoredEvent

STARTED = "InitializationStarted"
HEARTBEAT = "HeartbeatRecorded"
TERMINAL_OUTCOMES = {"InitializationCompleted": "completed", "InitializationFailed": "failed",
                     "InitializationAbandoned": "abandoned"}
DURATION_TOPICS = ("PhaseCompleted", "InitializationCompleted")
TOTAL = "total"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class InitIndexRow:
    """What fleet queries filter on; ``None`` fields are "not known from this batch"."""

    init_id: str
    model_id: str | None = None
    started_at: str | None = None
    host: str | None = None
    node_id: str | None = None
    application: str | None = None
    deployment: str | None = None
    labels: str | None = None
    outcome: str | None = None
    duration_s: float | None = None
    alive_until: str | None = None

    def as_params(self) -> dict[str, object]:
        """The row as named SQL parameters (``dataclasses.asdict`` deep-copies: too slow)."""
        return {name: getattr(self, name) for name in self.__slots__}

    def labels_dict(self) -> dict[str, str]:
        found: dict[str, str] = json.loads(self.labels) if self.labels else {}
        return found


def utc_text(timestamp: str | datetime) -> str:
    """A timestamp as UTC ISO text with microseconds, so text order is time order."""
    value = datetime.fromisoformat(timestamp) if isinstance(timestamp, str) else timestamp
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def index_rows(records: Sequence[StoredEvent]) -> list[InitIndexRow]:
    """One row per init whose start or end is in ``records``, folding the batch."""
    rows: dict[str, InitIndexRow] = {}
    for r in records:
        if r.topic != STARTED and r.topic != HEARTBEAT and r.topic not in TERMINAL_OUTCOMES:
            continue
        row = _row_of(r)
        old = rows.get(r.init_id)
        rows[r.init_id] = row if old is None else merge(old, row)
    return list(rows.values())


def _row_of(r: StoredEvent) -> InitIndexRow:
    body = json.loads(r.state)
    if r.topic == STARTED:
        labels: dict[str, str] = body.get("labels") or {}
        return InitIndexRow(
            r.init_id, model_id=body.get("model_id"), started_at=utc_text(r.timestamp),
            host=body.get("host"),
            node_id=labels.get(label_keys.NODE_ID) or body.get("node_id"),
            application=labels.get(label_keys.APPLICATION),
            deployment=labels.get(label_keys.DEPLOYMENT),
            labels=json.dumps(labels, sort_keys=True, separators=(",", ":")),
            alive_until=_alive_until(r.timestamp, body.get("heartbeat_interval_s")),
        )
    if r.topic == HEARTBEAT:
        return InitIndexRow(r.init_id, alive_until=_alive_until(r.timestamp,
                                                                 body.get("interval_s")))
    return InitIndexRow(r.init_id, outcome=TERMINAL_OUTCOMES[r.topic],
                        duration_s=body.get("duration_s"))


def _alive_until(timestamp: str, interval_s: object) -> str | None:
    if not isinstance(interval_s, int | float) or isinstance(interval_s, bool) \
            or interval_s <= 0:
        return None
    return utc_text(datetime.fromisoformat(timestamp)
                    + timedelta(seconds=liveness.ABANDON_AFTER_BEATS * interval_s))


def outcome_at(row: InitIndexRow, now: datetime | None) -> str:
    """The row's outcome judged at ``now`` (default: the current time): a running row past
    its ``alive_until`` is abandoned."""
    outcome = row.outcome or "running"
    if (outcome == "running" and row.alive_until is not None
            and row.alive_until < utc_text(now or datetime.now(UTC))):
        return "abandoned"
    return outcome


def merge(old: InitIndexRow, new: InitIndexRow) -> InitIndexRow:
    """``new`` over ``old``: the fields ``new`` knows win. The SQL stores' upsert does the same."""
    return InitIndexRow(
        init_id=old.init_id,
        model_id=_pick(new.model_id, old.model_id),
        started_at=_pick(new.started_at, old.started_at),
        host=_pick(new.host, old.host),
        node_id=_pick(new.node_id, old.node_id),
        application=_pick(new.application, old.application),
        deployment=_pick(new.deployment, old.deployment),
        labels=_pick(new.labels, old.labels),
        outcome=_pick(new.outcome, old.outcome),
        duration_s=_pick(new.duration_s, old.duration_s),
        alive_until=_pick(new.alive_until, old.alive_until),
    )


def _pick(new: T | None, old: T | None) -> T | None:
    return new if new is not None else old


def matches(row: InitIndexRow, query: InitQuery) -> bool:
    """Whether one index row passes every filter of ``query`` (what the SQL ``WHERE`` does)."""
    if row.started_at is None:
        return False
    checks = (
        (query.model_id, row.model_id), (query.host, row.host), (query.node_id, row.node_id),
        (query.application, row.application), (query.deployment, row.deployment),
        (query.outcome, outcome_at(row, query.now) if query.outcome else None),
    )
    if any(want is not None and want != have for want, have in checks):
        return False
    if query.since is not None and row.started_at < utc_text(query.since):
        return False
    if query.until is not None and row.started_at >= utc_text(query.until):
        return False
    if query.labels:
        have = row.labels_dict()
        return all(have.get(k) == v for k, v in query.labels)
    return True


def ordered(rows: Iterable[InitIndexRow], query: InitQuery) -> list[str]:
    """Init ids of ``rows`` in the query's order, cut at its limit."""
    if query.order == "slowest":
        key_rows = sorted(rows, key=lambda r: (r.duration_s is None, -(r.duration_s or 0.0),
                                               r.init_id))
    else:
        key_rows = sorted(rows, key=lambda r: (r.started_at or "", r.init_id), reverse=True)
    ids = [r.init_id for r in key_rows]
    return ids if query.limit is None else ids[:query.limit]
