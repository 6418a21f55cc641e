"""Moving initializations between stores as JSON lines, sequence numbers and ids unchanged.

One line per event: ``{"init_id", "sequence", "type", "schema_version", "timestamp",
"data"}``, ``data`` being the event's stored JSON body. Import is all or nothing: it checks
every line first (UTF-8 JSON of an event that decodes, no event twice, no sequence gap once
the target's events are counted, no conflict with them), then appends everything in one
transaction. It is idempotent: an init already in the target with the same events is
skipped, one whose stored events are a prefix gets the rest, and any difference is refused as
a conflict. Each error is one line naming the line of the file at fault.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from llm_init.errors import DuplicateEventError, EventStoreError
from llm_init.replay import read_events
from llm_init.stores.base import EventStore
from llm_init.stores.codec import StoredEvent, decode


def record_dict(record: StoredEvent) -> dict[str, Any]:
    """The one JSON shape of a recorded event (docs/events.md): the envelope, ``init_id``,
    ``sequence``, ``type``, ``schema_version`` and ``timestamp``, and ``data``, its fields."""
    return {"init_id": record.init_id, "sequence": record.sequence, "type": record.topic,
            "schema_version": record.schema_version, "timestamp": record.timestamp,
            "data": json.loads(record.state)}


def export_lines(store: EventStore, init_ids: Iterable[str]) -> Iterator[str]:
    """The JSON lines of each init's events, in order (unknown ids raise)."""
    for init_id in init_ids:
        read_events(store, init_id)  # raises for an unknown id, with its name
        for r in store.read(init_id):
            yield json.dumps(record_dict(r), separators=(",", ":"))


def parse_line(line: str | bytes, number: int) -> StoredEvent:
    """One exported line as a record, re-encoded exactly as ``encode`` writes bodies."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EventStoreError(
                f"line {number} is not UTF-8 text (byte 0x{line[exc.start]:02x} at column "
                f"{exc.start + 1}): not an exported llm-init event") from None
    try:
        raw = json.loads(line)
        record = StoredEvent(
            init_id=str(raw["init_id"]), sequence=int(raw["sequence"]), topic=str(raw["type"]),
            schema_version=int(raw["schema_version"]), timestamp=str(raw["timestamp"]),
            state=json.dumps(raw["data"], separators=(",", ":"), sort_keys=True,
                             allow_nan=False),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise EventStoreError(f"line {number} is not an exported llm-init event: {exc}") \
            from exc
    if record.sequence < 1:
        raise EventStoreError(f"line {number}: sequence {record.sequence} of "
                              f"{record.init_id} is below 1")
    try:
        decode(record)
    except EventStoreError as exc:
        raise EventStoreError(f"line {number}: {exc}") from exc
    return record


@dataclass(slots=True)
class ImportResult:
    imported: dict[str, int] = field(default_factory=dict)  # init id -> events appended
    unchanged: list[str] = field(default_factory=list)  # already there, identical


def import_lines(store: EventStore, lines: Iterable[str | bytes]) -> ImportResult:
    """Append the events of exported ``lines`` (see the module doc for the rules)."""
    incoming: dict[str, dict[int, tuple[int, StoredEvent]]] = {}  # init -> seq -> (line, r)
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        record = parse_line(line, number)
        seen = incoming.setdefault(record.init_id, {})
        before = seen.get(record.sequence)
        if before is not None:
            raise DuplicateEventError(
                f"line {number} repeats event {record.init_id}#{record.sequence} of line "
                f"{before[0]}; nothing was imported")
        seen[record.sequence] = (number, record)
    result = ImportResult()
    to_append: list[StoredEvent] = []
    for init_id, by_sequence in incoming.items():
        existing = {r.sequence: r for r in store.read(init_id)}
        for sequence in sorted(by_sequence):
            number, record = by_sequence[sequence]
            if sequence in existing and existing[sequence] != record:
                raise DuplicateEventError(
                    f"line {number}: initialization {init_id} exists in the target with a "
                    f"different event at sequence {sequence}; nothing was imported")
        _refuse_gaps(init_id, by_sequence, existing)
        missing = [by_sequence[q][1] for q in sorted(by_sequence) if q not in existing]
        if missing:
            to_append.extend(missing)
            result.imported[init_id] = len(missing)
        else:
            result.unchanged.append(init_id)
    store.append(to_append)  # one transaction: the whole file or nothing
    return result


def _refuse_gaps(init_id: str, by_sequence: dict[int, tuple[int, StoredEvent]],
                 existing: dict[int, StoredEvent]) -> None:
    """Sequences of the file and the target together must run 1..N without a hole."""
    have = sorted(set(by_sequence) | set(existing))
    expected = 1
    for sequence in have:
        if sequence != expected:
            number = by_sequence[sequence][0] if sequence in by_sequence else None
            where = f"line {number}" if number is not None else f"initialization {init_id}"
            missing = (f"#{expected}" if sequence == expected + 1
                       else f"#{expected}..#{sequence - 1}")
            raise EventStoreError(
                f"{where}: event {init_id}#{sequence} follows a gap, {init_id}{missing} is "
                "neither in the file nor in the target; nothing was imported")
        expected += 1
