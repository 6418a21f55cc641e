"""Moving initializations between stores as JSON lines, sequence numbers and ids unchanged.

One line per event: ``{"init_id", "sequence", "type", "schema_version", "timestamp",
"data"}``, ``data`` being the event's stored JSON body. Import checks every event decodes,
appends each init in one transaction, and is idempotent: an init already in the target with
the same events is skipped, one whose stored events are a prefix gets the rest, and any
difference is refused as a conflict.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from llm_init.errors import DuplicateEventError, EventStoreError
from llm_init.replay import read_events
from llm_init.stores.base import EventStore, StoredEvent, decode


def export_lines(store: EventStore, init_ids: Iterable[str]) -> Iterator[str]:
    """The JSON lines of each init's events, in order (unknown ids raise)."""
    for init_id in init_ids:
        read_events(store, init_id)  # raises for an unknown id, with its name
        for r in store.read(init_id):
            yield json.dumps({"init_id": r.init_id, "sequence": r.sequence, "type": r.topic,
                              "schema_version": r.schema_version, "timestamp": r.timestamp,
                              "data": json.loads(r.state)}, separators=(",", ":"))


def parse_line(line: str, number: int) -> StoredEvent:
    """One exported line as a record, re-encoded exactly as ``encode`` writes bodies."""
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
    try:
        decode(record)
    except EventStoreError as exc:
        raise EventStoreError(f"line {number}: {exc}") from exc
    return record


@dataclass(slots=True)
class ImportResult:
    imported: dict[str, int] = field(default_factory=dict)  # init id -> events appended
    unchanged: list[str] = field(default_factory=list)  # already there, identical


def import_lines(store: EventStore, lines: Iterable[str]) -> ImportResult:
    """Append the events of exported ``lines`` (see the module doc for the rules)."""
    records = (parse_line(line, n) for n, line in enumerate(lines, 1) if line.strip())
    result = ImportResult()
    for init_id, group in itertools.groupby(records, lambda r: r.init_id):
        incoming = sorted(group, key=lambda r: r.sequence)
        existing = {r.sequence: r for r in store.read(init_id)}
        clashes = [r.sequence for r in incoming
                   if r.sequence in existing and existing[r.sequence] != r]
        if clashes:
            raise DuplicateEventError(
                f"initialization {init_id} exists in the target with different events at "
                f"sequence {clashes[0]}; nothing of it was imported"
            )
        missing = [r for r in incoming if r.sequence not in existing]
        if missing:
            store.append(missing)
            result.imported[init_id] = len(missing)
        else:
            result.unchanged.append(init_id)
    return result
