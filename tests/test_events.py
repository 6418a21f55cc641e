"""docs/events.md documents every registered event type and every field, as the code has them."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from llm_init.events import EVENT_TYPES, Event, payload_names

DOC = Path(__file__).resolve().parents[1] / "docs" / "events.md"
COMMON = "Every event"


def documented() -> dict[str, list[tuple[str, str]]]:
    """Each ``## `` section of the doc: the (field, type) rows of its table, in order."""
    sections: dict[str, list[tuple[str, str]]] = {}
    rows: list[tuple[str, str]] | None = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            rows = sections.setdefault(line[3:].strip(), [])
        elif rows is not None and line.startswith("| `"):
            # A pipe inside a cell is escaped (``str \| None``): split on the others only.
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            rows.append((cells[0].strip("`"), cells[1].strip("`")))
    return sections


def in_code(cls: type[Event]) -> list[tuple[str, str]]:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return [(name, str(fields[name].type)) for name in payload_names(cls)]


def test_every_registered_event_type_has_a_section() -> None:
    """The doc has a section for each type in the registry, and none for a type it lacks."""
    assert set(documented()) - {COMMON} == set(EVENT_TYPES)


def test_every_event_field_is_documented_with_its_type_in_order() -> None:
    """Each type's table lists the event's own fields with their annotated types, in order."""
    sections = documented()
    assert {name: sections.get(name) for name in EVENT_TYPES} == {
        name: in_code(cls) for name, cls in EVENT_TYPES.items()}


def test_the_fields_every_event_carries_are_documented() -> None:
    """The common table lists the fields of ``Event`` itself with their types."""
    assert documented()[COMMON] == [(f.name, str(f.type)) for f in dataclasses.fields(Event)]
