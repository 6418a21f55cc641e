"""Specification of the CLI's tables on narrow consoles: at 80 columns, on a terminal or a
pipe, ``list``, ``status``, ``stats`` and ``events`` never cut an init id, a model or an
outcome; less important columns give way first."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from llm_init.stores import SQLiteEventStore
from tests.support.cli import invoke
from tests.support.logs import T0, records, synthetic_log

ROOT = Path(__file__).resolve().parents[1]
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
LABELS = {"application": "chat-completions", "deployment": "LLMServer:llama-8b",
          "node_id": "9f4c1e2d7a" * 5 + "abcdef"}
INITS = {"58741c0e5b3f4f6a9d2e8b7c6a5f4e3d": "completed",
         "a1b2c3d4e5f60718293a4b5c6d7e8f90": "failed",
         "c0ffee00c0ffee00c0ffee00c0ffee00": "running"}


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = tmp_path / "events.sqlite"
    events = SQLiteEventStore(path)
    for n, (init_id, outcome) in enumerate(INITS.items()):
        events.append(records(synthetic_log(
            init_id, model_id=MODEL, outcome=outcome, started_at=T0 + timedelta(minutes=n),
            seconds=12.5, host="worker-node-0017.cluster.internal", labels=LABELS)))
    events.close()
    return str(path)


def commands(store: str) -> dict[str, list[str]]:
    first = next(iter(INITS))
    return {"list": ["list", "--store", store], "status": ["status", "--store", store],
            "stats": ["stats", "--store", store], "events": ["events", first, "--store", store]}


def column(out: str, header: str) -> list[str]:
    """The cells of one column of a rendered table, each folded cell joined again."""
    lines = [line.rstrip()[1:-1].split(line[0])
             for line in out.splitlines() if line.startswith(("│", "┃"))]
    at = [c.strip() for c in lines[0]].index(header)
    cells: list[str] = []
    for row in lines[1:]:
        first, cell = row[0].strip(), row[at].strip()
        if first:
            cells.append(cell)
        else:
            cells[-1] += cell
    return cells


def assert_fits_and_keeps_handles(command: str, out: str, width: int) -> None:
    assert "…" not in out, out
    assert max(len(line) for line in out.splitlines()) <= width, out
    if command == "list":
        assert column(out, "init id") == [i[:12] for i in reversed(INITS)], out
        assert column(out, "model") == [MODEL] * len(INITS), out
        assert column(out, "outcome") == list(reversed(INITS.values())), out
    if command == "status":
        assert column(out, "init id") == ["c0ffee00c0ff"], out
        assert column(out, "model") == [MODEL], out
        assert column(out, "phase") == ["download"], out
    if command == "stats":
        assert column(out, "phase") == ["pre_initialization", "download", "placement_group",
                                        "engine_init", "post_initialization", "total"], out
    if command == "events":
        assert next(iter(INITS)) in out
        assert column(out, "type")[0] == "InitializationStarted", out
        assert column(out, "type")[-1] == "InitializationCompleted", out


@pytest.mark.parametrize("command", ["list", "status", "stats", "events"])
def test_tables_at_80_columns_keep_ids_models_and_outcomes_whole(store: str,
                                                                  command: str) -> None:
    """At 80 columns each table fits, and ids, models, outcomes and phases are not cut."""
    result = invoke(*commands(store)[command], width=80)
    assert result.exit_code == 0, result.output
    assert_fits_and_keeps_handles(command, result.output, 80)


@pytest.mark.parametrize("columns", [None, "80"], ids=["pipe", "COLUMNS=80"])
def test_list_into_a_pipe_keeps_ids_models_and_outcomes_whole(store: str,
                                                              columns: str | None) -> None:
    """``llm-init list | ...`` (80 columns, or as many as COLUMNS says) cuts no id, model or
    outcome."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["PYTHONPATH"] = str(ROOT)
    if columns:
        env["COLUMNS"] = columns
    proc = subprocess.run([sys.executable, "-m", "llm_init", "list", "--store", store],
                          capture_output=True, text=True, env=env,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert_fits_and_keeps_handles("list", proc.stdout, 80)
