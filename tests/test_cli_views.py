"""Specification of what the CLI's commands share: one duration format, one JSON shape per
event, one listing of initializations (with the host each ran on)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from llm_init.fleet import InitQuery, find_initializations
from llm_init.replay import list_initializations
from llm_init.stores import SQLiteEventStore
from tests.support.cli import invoke, table_rows
from tests.support.logs import T0, records, synthetic_log

SLOW = "5a0c0e5b3f4f6a9d2e8b7c6a5f4e3d21"  # five phases of 30 s: 150 s in all
QUICK = "b1b2c3d4e5f60718293a4b5c6d7e8f90"  # five phases of 0.5 s


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = tmp_path / "events.sqlite"
    events = SQLiteEventStore(path)
    events.append(records(synthetic_log(SLOW, model_id="big", seconds=30.0, host="gpu-7")))
    events.append(records(synthetic_log(QUICK, model_id="small", seconds=0.5, host="gpu-8",
                                        started_at=T0 + timedelta(minutes=5))))
    events.close()
    return str(path)


def test_list_shows_a_long_initialization_in_minutes(store: str) -> None:
    """``list`` writes a duration of two minutes or more in minutes, as ``stats`` and
    ``status`` do, and shorter ones in seconds."""
    result = invoke("list", "--store", store)
    assert result.exit_code == 0, result.output
    assert table_rows(result.output) == [
        [QUICK[:12], "small", "completed", "2025-01-01 12:05:00", "2.50 s", "500.0 ms",
         "500.0 ms", "500.0 ms", "", "gpu-8"],
        [SLOW[:12], "big", "completed", "2025-01-01 12:00:00", "2.5 min", "30.00 s",
         "30.00 s", "30.00 s", "", "gpu-7"]]


def test_timeline_head_shows_a_long_initialization_in_minutes(store: str) -> None:
    """The waterfall's first line gives a 150-second initialization as 2.5 min."""
    result = invoke("timeline", SLOW, "--store", store)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"{SLOW} big completed in 2.5 min"


def test_events_json_is_the_export_shape(store: str) -> None:
    """Each line of ``events --json`` is the object ``export`` writes for that event."""
    events = invoke("events", SLOW, "--store", store, "--json")
    export = invoke("export", SLOW, "--store", store)
    assert events.exit_code == export.exit_code == 0, events.output + export.output
    assert [json.loads(line) for line in events.output.splitlines()] == [
        json.loads(line) for line in export.output.splitlines()]


def test_events_flat_keeps_the_old_shape_with_fields_beside_the_envelope(store: str) -> None:
    """``events --flat`` prints each exported event with its ``data`` lifted beside the
    envelope, as ``events --json`` printed it before it took the export shape."""
    events = invoke("events", SLOW, "--store", store, "--flat")
    export = invoke("export", SLOW, "--store", store)
    assert events.exit_code == export.exit_code == 0, events.output + export.output
    exported = [json.loads(line) for line in export.output.splitlines()]
    assert [json.loads(line) for line in events.output.splitlines()] == [
        {**{k: v for k, v in e.items() if k != "data"}, **e["data"]} for e in exported]


def test_the_listing_names_the_host_of_each_initialization(store: str) -> None:
    """The fleet query and the older ``list_initializations`` list the same inits, newest
    first, each with the host it started on."""
    events = SQLiteEventStore(Path(store))
    try:
        found = [(r.init_id, r.host) for r in find_initializations(events, InitQuery())]
        listed = [(r.init_id, r.host) for r in list_initializations(events)]
    finally:
        events.close()
    assert found == listed == [(QUICK, "gpu-8"), (SLOW, "gpu-7")]
