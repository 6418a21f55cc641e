"""Specification of export and import: events move between stores with ids and sequence
numbers unchanged, and importing again changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_init import DuplicateEventError, EventStoreError
from llm_init.fleet import export_lines, import_lines
from llm_init.stores import InMemoryEventStore, SQLiteEventStore, open_store
from tests.stores.contract import with_fleet
from tests.support.logs import records, synthetic_log


def test_sqlite_to_postgres_and_back_keeps_every_record(tmp_path: Path,
                                                        postgres_url: str) -> None:
    """A fleet exported from SQLite, imported into PostgreSQL, exported again and imported
    into a new SQLite file has exactly the original records."""
    source = with_fleet(SQLiteEventStore(tmp_path / "a.sqlite"))
    ids = source.list_init_ids(100)
    middle = open_store(postgres_url, buffered=False)
    import_lines(middle, export_lines(source, ids))
    back = SQLiteEventStore(tmp_path / "b.sqlite")
    import_lines(back, export_lines(middle, middle.list_init_ids(100)))
    assert {i: back.read(i) for i in ids} == {i: source.read(i) for i in ids}


def test_importing_twice_changes_nothing() -> None:
    """A second import of the same lines appends nothing and reports the inits unchanged."""
    source, target = InMemoryEventStore(), InMemoryEventStore()
    source.append(records(synthetic_log("x")))
    lines = list(export_lines(source, ["x"]))
    import_lines(target, lines)
    again = import_lines(target, lines)
    assert (again.imported, again.unchanged) == ({}, ["x"])


def test_importing_onto_a_prefix_appends_the_rest() -> None:
    """An init whose first events are already in the target gets only the missing ones."""
    log = records(synthetic_log("x"))
    source, target = InMemoryEventStore(), InMemoryEventStore()
    source.append(log)
    target.append(log[:4])
    result = import_lines(target, export_lines(source, ["x"]))
    assert (result.imported, target.read("x")) == ({"x": len(log) - 4}, log)


def test_a_conflicting_init_is_refused_whole() -> None:
    """An init stored with different events is refused, naming it, and nothing is added."""
    source, target = InMemoryEventStore(), InMemoryEventStore()
    source.append(records(synthetic_log("x")))
    target.append(records(synthetic_log("x", host="elsewhere"))[:3])
    with pytest.raises(DuplicateEventError, match="initialization x"):
        import_lines(target, export_lines(source, ["x"]))
    assert len(target.read("x")) == 3


def test_a_malformed_line_is_named_by_number() -> None:
    """A line that is not an exported event fails the import with its line number."""
    source = InMemoryEventStore()
    source.append(records(synthetic_log("x"))[:2])
    lines = [*export_lines(source, ["x"]), '{"init_id": "x"}']
    with pytest.raises(EventStoreError, match="line 3"):
        import_lines(InMemoryEventStore(), lines)
