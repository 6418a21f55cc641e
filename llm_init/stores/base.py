"""The stored form of events, the store protocol, and the one mapper between events and records."""

from __future__ import annotations

import json
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

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
