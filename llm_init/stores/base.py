"""The stored form of events, the store protocol, and the one mapper between events and records."""

from __future__ import annotations

import json
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from llm_init.errors import EventStoreError
from llm_init.events import EVENT_TYPES, Event, payload_of


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as a store keeps it: key, type name, schema version, time, and a JSON body."""

    init_id: str
    sequence: int
    topic: str
    schema_version: int
    timestamp: str
    state: str


class EventStore(Protocol):
    """An append-only log of stored events, keyed by (init_id, sequence)."""

    def append(self, records: Sequence[StoredEvent]) -> None:
        """Append all records in one transaction; a taken (init_id, sequence) raises
        ``DuplicateEventError`` and appends nothing."""

    def read(self, init_id: str, *, after: int = 0, upto: int | None = None) -> list[StoredEvent]:
        """The records of one initialization with ``after < sequence <= upto``, in order."""

    def list_init_ids(self, limit: int = 50) -> list[str]:
        """Ids of the latest-started initializations, newest first."""

    def close(self) -> None:
        """Release connections and files."""


Outcome = Literal["running", "completed", "failed"]
OUTCOMES: tuple[Outcome, ...] = ("running", "completed", "failed")


@dataclass(frozen=True, slots=True, kw_only=True)
class InitQuery:
    """Which initializations a fleet query means: every field set must match, ``None`` is any.

    ``since``/``until`` bound the start time; ``labels`` are (key, value) pairs that must all be
    among the init's labels; ``order`` is ``newest`` (start time, newest first) or ``slowest``
    (recorded duration, longest first, running ones last); ``limit=None`` means all.
    """

    model_id: str | None = None
    outcome: Outcome | None = None
    since: datetime | None = None
    until: datetime | None = None
    host: str | None = None
    node_id: str | None = None
    application: str | None = None
    deployment: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    order: Literal["newest", "slowest"] = "newest"
    limit: int | None = 50


@runtime_checkable
class QueryableStore(Protocol):
    """Optional store methods that answer fleet queries without replaying every log; the fleet
    module falls back to replaying when a store lacks them."""

    def query_initializations(self, query: InitQuery) -> list[str]:
        """Ids of the initializations matching ``query``, in its order, at most its limit."""

    def query_durations(self, query: InitQuery) -> list[tuple[str, float]]:
        """``(phase, seconds)`` of every ``PhaseCompleted`` and ``("total", seconds)`` of every
        ``InitializationCompleted`` of the matching inits (order and limit are ignored)."""


class ChangeFeed(Protocol):
    """A subscription to a store's appends, opened before the first read so none is missed."""

    def wait(self, timeout: float) -> bool:
        """Block until something was appended since the last call (``True``) or ``timeout``
        seconds passed (``False``)."""

    def close(self) -> None:
        """Stop listening."""


@runtime_checkable
class WatchableStore(Protocol):
    """Optional store method for live following."""

    def watch(self) -> ChangeFeed:
        """A feed that wakes up when any process appends to this store."""


def encode(event: Event) -> StoredEvent:
    body: dict[str, Any] = payload_of(event)
    body["trace_id"] = event.trace_id
    body["span_id"] = event.span_id
    body["node_id"] = event.node_id
    return StoredEvent(
        init_id=event.init_id,
        sequence=event.sequence,
        topic=event.TYPE,
        schema_version=event.SCHEMA_VERSION,
        timestamp=event.timestamp.isoformat(timespec="microseconds"),
        state=json.dumps(body, separators=(",", ":"), sort_keys=True, allow_nan=False),
    )


def decode(record: StoredEvent) -> Event:
    cls = EVENT_TYPES.get(record.topic)
    if cls is None:
        raise EventStoreError(
            f"event {record.init_id}#{record.sequence} has unknown type {record.topic!r}"
        )
    if record.schema_version > cls.SCHEMA_VERSION:
        raise EventStoreError(
            f"event {record.init_id}#{record.sequence} ({record.topic}) has schema version "
            f"{record.schema_version}, newer than this llm-init understands ({cls.SCHEMA_VERSION})"
        )
    try:
        body = json.loads(record.state)
        for name in _tuple_fields(cls):
            if isinstance(body.get(name), list):
                body[name] = tuple(body[name])
        return cls(
            init_id=record.init_id,
            sequence=record.sequence,
            timestamp=datetime.fromisoformat(record.timestamp),
            **body,
        )
    except (ValueError, TypeError) as exc:
        raise EventStoreError(
            f"event {record.init_id}#{record.sequence} ({record.topic}) cannot be decoded: {exc}"
        ) from exc


def _tuple_fields(cls: type[Event]) -> frozenset[str]:
    found = _TUPLE_FIELDS.get(cls.TYPE)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = frozenset(n for n, t in hints.items() if typing.get_origin(t) is tuple)
        _TUPLE_FIELDS[cls.TYPE] = found
    return found


# JSON has no tuples; these fields are turned back into tuples so events round-trip unchanged.
_TUPLE_FIELDS: dict[str, frozenset[str]] = {}
