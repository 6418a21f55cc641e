"""Specification of the waterfall on an 80-column console: a long entry breaks between its
values, never inside one, and keeps every value."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest

from llm_init import Event, StepCompleted, StepProgressed, StepStarted
from llm_init.stores import SQLiteEventStore
from tests.support.cli import invoke
from tests.support.logs import records, synthetic_log

INIT = "58741c0e5b3f4f6a9d2e8b7c6a5f4e3d"
NODE = "9f4c1e2d7a" * 5 + "abcdef"  # a Ray node id, shown by its first 12 characters


def with_download(events: list[Event]) -> list[Event]:
    """``events`` with a download step inside the download phase that reported on one node."""
    at = next(i for i, e in enumerate(events)
              if getattr(e, "phase", None) == "download" and e.TYPE == "PhaseCompleted")
    t = events[at - 1].timestamp
    step = [StepStarted(init_id=INIT, sequence=0, timestamp=t, phase="download",
                        step="download"),
            StepProgressed(init_id=INIT, sequence=0, timestamp=t + timedelta(seconds=0.4),
                           phase="download", step="download",
                           details={"node_id": NODE, "stage": "node_completed",
                                    "seconds": 0.4, "files_done": 12, "files_total": 12,
                                    "bytes_done": 16_060_000_000,
                                    "bytes_total": 16_060_000_000, "ran_in": "ray_task"}),
            StepCompleted(init_id=INIT, sequence=0, timestamp=t + timedelta(seconds=0.5),
                          phase="download", step="download", duration_s=0.5,
                          changed_fields=())]
    merged = events[:at] + step + events[at:]
    return [dataclasses.replace(e, sequence=n) for n, e in enumerate(merged, 1)]


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = tmp_path / "events.sqlite"
    events = SQLiteEventStore(path)
    events.append(records(with_download(synthetic_log(INIT, model_id="tiny", seconds=1.0))))
    events.close()
    return str(path)


def rows(out: str) -> list[str]:
    """The waterfall's lines without the tree's guides."""
    return [line.lstrip("│├└─ ").rstrip() for line in out.splitlines()]


def test_a_node_entry_breaks_between_values_at_80_columns(store: str) -> None:
    """At 80 columns the node's entry is cut into lines only between its values (the node
    and where it ran, then its files and bytes), and no line is wider than the console."""
    result = invoke("timeline", INIT, "--store", store, width=80)
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    out = rows(result.output)
    at = next(i for i, line in enumerate(out) if line.endswith("400.0 ms"))
    assert out[at + 1:at + 3] == [f"node {NODE[:12]} (ray_task)",
                                  "12/12 files 16.1 GB/16.1 GB"]


def test_a_hook_name_stays_whole_at_80_columns(store: str) -> None:
    """A hook entry that does not fit moves onto the next line whole: ``hook``, its name and
    its callback together."""
    result = invoke("timeline", INIT, "--store", store, width=80)
    assert result.exit_code == 0, result.output
    assert [line for line in rows(result.output) if "on_pre_" in line] == [
        f"hook on_pre_{phase} (cb)" for phase in ("pre_initialization", "download",
                                                  "placement_group", "engine_init",
                                                  "post_initialization")]


def test_a_node_entry_is_one_line_on_a_wide_console(store: str) -> None:
    """With room for it, the node's entry is one line with every value."""
    result = invoke("timeline", INIT, "--store", store, width=200)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[6] == (
        "│       └──       ▒▒                       +   1.01 s  400.0 ms  "
        f"node {NODE[:12]} (ray_task) 12/12 files 16.1 GB/16.1 GB")
