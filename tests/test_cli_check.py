"""Specification of ``llm-init check`` and of the log winning over the index: a damaged store
is reported (exit 1, one line per problem), and ``timeline``/``status`` show what the log says
and warn where the index row disagrees with it."""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm_init.cli import app
from llm_init.stores import SQLiteEventStore
from tests.stores.contract import fleet_records, with_fleet

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.output


def cli_streams(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """Five inits (a..e; ``d`` still running), checkpointed into the main file."""
    path = tmp_path / "events.sqlite"
    with_fleet(SQLiteEventStore(path)).close()
    return path


def sql(path: Path, statement: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(statement)
    conn.close()


def test_check_passes_a_healthy_store(fleet: Path) -> None:
    """``check`` on an undamaged store exits 0 and says how many inits it checked."""
    assert cli("check", "--store", str(fleet)) == (0, "checked 5 initializations: ok\n")


def test_check_reports_bytes_overwritten_in_the_file(tmp_path: Path) -> None:
    """With one page of the SQLite file overwritten by garbage, the installed command exits 1
    and reports what ``PRAGMA integrity_check`` finds, without a traceback."""
    path = tmp_path / "events.sqlite"
    store = SQLiteEventStore(path)
    for n in range(12):
        for log in fleet_records():
            store.append([dataclasses.replace(r, init_id=f"{r.init_id}{n}") for r in log])
    store.close()
    size = path.stat().st_size
    page = 4096
    with path.open("r+b") as f:  # a page in the middle: events, far from the schema page
        f.seek((size // page // 2) * page)
        f.write(b"\xde\xad\xbe\xef" * (page // 4))
    proc = subprocess.run([sys.executable, "-m", "llm_init", "check", "--store", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 1
    assert "integrity: " in proc.stdout
    assert "unreadable: " in proc.stdout  # the inits whose rows sat on that page
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().endswith("problems")


def test_timeline_shows_the_log_and_warns_when_the_index_disagrees(fleet: Path) -> None:
    """An init whose last event is gone from the log while its index row still says
    completed is shown as running, with a warning naming both."""
    sql(fleet, "DELETE FROM events WHERE init_id = 'a' AND topic = 'InitializationCompleted'")
    code, out, err = cli_streams("timeline", "a", "--store", str(fleet), "--json")
    assert code == 0
    assert err == ("warning: a: the index says completed but the log says running (last "
                   "event #26); showing the log (run llm-init check)\n")
    assert json.loads(out)["outcome"] == "running"


def test_status_leaves_out_an_init_whose_log_says_it_finished(fleet: Path) -> None:
    """An init the index calls running but whose log ends completed is not shown in
    progress; a warning names it."""
    sql(fleet, "UPDATE initializations SET outcome = 'running' WHERE init_id = 'a'")
    code, out, err = cli_streams("status", "--store", str(fleet), "--json")
    assert code == 0
    assert err == ("warning: a: the index says running but the log says completed; left "
                   "out (run llm-init check)\n")
    assert [json.loads(line)["init_id"] for line in out.splitlines()] == ["d"]


@pytest.mark.parametrize(("damage", "expected"), [
    ("UPDATE initializations SET outcome = 'failed' WHERE init_id = 'c'",
     ["index: c: the index says failed but the log says completed (last event #27)"]),
    ("DELETE FROM events WHERE init_id = 'b' AND sequence IN (5, 6)",
     ["gap: b: events #5..#6 are missing (the log goes on at #7)"]),
    ("UPDATE events SET state = '{not json' WHERE init_id = 'e' AND sequence = 3",
     ["undecodable: event e#3 (HookStarted) cannot be decoded: "]),
    ("DELETE FROM events WHERE init_id = 'c' AND sequence = 1",
     ["gap: c: event #1 is missing (the log goes on at #2)",
      "no-start: c: the log does not start with InitializationStarted"]),
    ("DELETE FROM initializations WHERE init_id = 'e'",
     ["index: e: the log says completed but the index has no row for it"]),
], ids=["outcome", "gap", "undecodable", "no-start", "no-index-row"])
def test_check_names_each_kind_of_damage(fleet: Path, damage: str,
                                         expected: list[str]) -> None:
    """Each kind of damage is one line naming the init, and ``check`` exits 1."""
    sql(fleet, damage)
    code, out, err = cli_streams("check", "--store", str(fleet))
    assert code == 1
    assert [line[:len(e)] for line, e in zip(out.splitlines(), expected, strict=True)] \
        == expected
    assert err == (f"checked 5 initializations: {len(expected)} "
                   f"problem{'' if len(expected) == 1 else 's'}\n")
