"""Specification of the ``llm-init`` CLI on a store written by a real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm_init import LLMConfig, SQLiteEventStore, initialize_node_sync
from tests.support.callbacks import Busy
from tests.support.cli import entries, invoke, table_rows
from tests.support.logs import records, synthetic_log
from tests.support.steps import setting_steps

runner = CliRunner()
INIT = "0c3f6a2e9b8d4e1f8a7b6c5d4e3f2a1b"


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "events.sqlite"
    ctx = initialize_node_sync(LLMConfig(model_id="tiny-llama", callback_class=Busy),
                               event_store=SQLiteEventStore(path), steps=setting_steps())
    return path, ctx.init_id


def cli(*args: str) -> tuple[int, str]:
    result = invoke(*args)
    return result.exit_code, result.output


def test_list_shows_the_initialization_with_model_and_outcome(tmp_path: Path) -> None:
    """`list` has a row with the init id, the model, its outcome, start, phase times and host."""
    path = tmp_path / "events.sqlite"
    store = SQLiteEventStore(path)
    store.append(records(synthetic_log(INIT, model_id="tiny-llama", seconds=2.0)))
    store.close()
    code, out = cli("list", "--store", str(path))
    assert code == 0
    assert table_rows(out) == [[INIT[:12], "tiny-llama", "completed", "2025-01-01 12:00:00",
                                "10.00 s", "2.00 s", "2.00 s", "2.00 s", "", "host-a"]]


def test_list_json_has_per_phase_durations(recorded: tuple[Path, str]) -> None:
    """`list --json` gives one object per init with the five phase durations."""
    path, init_id = recorded
    code, out = cli("list", "--store", str(path), "--json")
    row = json.loads(out.splitlines()[0])
    assert code == 0
    assert row["init_id"] == init_id
    assert set(row["phases"]) == {"pre_initialization", "download", "placement_group",
                                  "engine_init", "post_initialization"}


def test_timeline_shows_phases_hooks_and_steps(recorded: tuple[Path, str]) -> None:
    """`timeline` lists every phase, hook call and step of the init (a unique prefix works)."""
    path, init_id = recorded
    code, out = cli("timeline", init_id[:8], "--store", str(path))
    assert code == 0
    busy = "(tests.support.callbacks.Busy)"
    assert entries(out) == [
        "pre_initialization", f"hook on_pre_initialization {busy}",
        "download", f"hook on_pre_download {busy}", "step download",
        f"hook on_post_download {busy}",
        "placement_group", "step placement_group",
        "engine_init", f"hook on_pre_engine_init {busy}", "step engine",
        "post_initialization"]


def test_events_json_lines_round_trip_the_log(recorded: tuple[Path, str]) -> None:
    """`events --json` prints one JSON object per event, in sequence order."""
    path, init_id = recorded
    code, out = cli("events", init_id, "--store", str(path), "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [r["sequence"] for r in rows] == list(range(1, len(rows) + 1))
    assert rows[0]["type"] == "InitializationStarted"
    assert rows[-1]["type"] == "InitializationCompleted"


def test_replay_at_shows_the_context_at_that_event(recorded: tuple[Path, str]) -> None:
    """`replay --at 1` shows the initial context; without --at, the final one."""
    path, init_id = recorded
    _, first = cli("replay", init_id, "--store", str(path), "--at", "1")
    _, last = cli("replay", init_id, "--store", str(path))
    assert json.loads(first)["context"]["custom_data"] == {}
    assert json.loads(last)["context"]["custom_data"] == {"n": 2}


def test_unknown_init_id_is_a_one_line_error(recorded: tuple[Path, str]) -> None:
    """An unknown id exits 1 with one line and no traceback."""
    path, _ = recorded
    code, out = cli("timeline", "nope", "--store", str(path))
    assert code == 1
    assert out.strip() == "error: no initialization 'nope' in the event store"


def test_missing_store_is_a_one_line_error(tmp_path: Path) -> None:
    """A store path that does not exist exits 1 and is not created."""
    code, out = cli("list", "--store", str(tmp_path / "absent.sqlite"))
    assert code == 1
    assert out == f"error: no event store at {tmp_path / 'absent.sqlite'}\n"
    assert not (tmp_path / "absent.sqlite").exists()


def test_corrupt_store_is_a_one_line_error_from_the_real_command(tmp_path: Path) -> None:
    """The installed `llm-init` command reports a corrupt file in one line, no traceback."""
    bad = tmp_path / "events.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    proc = subprocess.run([sys.executable, "-m", "llm_init", "list"], capture_output=True,
                          text=True, env={**os.environ, "LLM_INIT_EVENT_STORE": str(bad)},
                          timeout=60)
    assert proc.returncode == 1
    assert "not a usable llm-init event store" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
