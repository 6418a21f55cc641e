"""Specification of what the log says about an initialization whose process was killed with
SIGKILL in the middle of each phase, read through the real ``llm-init`` CLI: running while it
beats, abandoned once its heartbeat is older than the bound, and closed by the next process
that starts on the same host."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
LLM_INIT = Path(sys.executable).parent / "llm-init"
INTERVAL_S = 0.5  # long enough for a loaded machine to keep its beat
BOUND_S = 3 * INTERVAL_S  # the documented bound: three heartbeat intervals of silence
PHASES = ["pre_initialization", "download", "placement_group", "engine_init",
          "post_initialization"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200",
       "LLM_INIT_HEARTBEAT_INTERVAL_S": str(INTERVAL_S), "LLM_INIT_METRICS_PORT": "off"}


def cli(store: Path, *args: str) -> str:
    """Run ``llm-init ARGS --store STORE`` in its own process; its standard output."""
    done = subprocess.run([str(LLM_INIT), *args, "--store", str(store)], env=ENV, cwd=ROOT,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    return done.stdout


def cli_lines(store: Path, *args: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cli(store, *args, "--json").splitlines()]


def run_init(store: Path, init_id: str, phase: str, marker: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.support.dying_init", str(store),
                             init_id, phase, str(marker)], env=ENV, cwd=ROOT, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@dataclass
class Killed:
    """An initialization killed in ``phase``, and what ``status`` said before the kill."""

    store: Path
    init_id: str
    phase: str
    pid: int
    status_before: list[dict[str, Any]]

    def copy(self, to: Path) -> Path:
        """A copy of the store (to change it without changing what others read)."""
        target = to / f"copy-{uuid.uuid4().hex[:8]}.sqlite"
        with sqlite3.connect(self.store) as src, sqlite3.connect(target) as dst:
            src.backup(dst)
        return target


@pytest.fixture(scope="module", params=PHASES)
def killed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Killed:
    phase: str = request.param
    where = tmp_path_factory.mktemp(f"killed-{phase}")
    store, marker, init_id = where / "events.sqlite", where / "hanging", uuid.uuid4().hex
    proc = run_init(store, init_id, phase, marker)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the initialization never reached its phase"
            time.sleep(0.05)
        time.sleep(3 * BOUND_S)  # hanging with its event loop blocked, well past the bound
        before = cli_lines(store, "status")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    time.sleep(BOUND_S + 2 * INTERVAL_S)
    return Killed(store, init_id, phase, proc.pid, before)


def test_a_hanging_initialization_that_beats_reads_running(killed: Killed) -> None:
    """Hung in the phase (event loop blocked) for three times the bound, it is still in
    progress, in that phase: its heartbeat comes from a thread."""
    assert [(s["init_id"], s["outcome"], s["phase"]) for s in killed.status_before] == [
        (killed.init_id, "running", killed.phase)]


def test_a_killed_initialization_reads_abandoned_in_every_view(killed: Killed) -> None:
    """Once its heartbeat is older than the bound, list, status, timeline and stats all say
    abandoned, in the phase it died in, and no longer running."""
    store = killed.store
    abandoned = cli_lines(store, "list", "--outcome", "abandoned")
    assert [(r["init_id"], r["outcome"], r["current_phase"]) for r in abandoned] == [
        (killed.init_id, "abandoned", killed.phase)]
    assert cli_lines(store, "list", "--outcome", "running") == []
    assert cli_lines(store, "status") == []
    timeline = json.loads(cli(store, "timeline", killed.init_id[:10], "--json"))
    phases = {e["name"]: e["status"] for e in timeline["timeline"] if e["kind"] == "phase"}
    assert (timeline["outcome"], phases[killed.phase]) == ("abandoned", "abandoned")
    assert "no heartbeat since" in timeline["error"]
    done_before = PHASES[:PHASES.index(killed.phase)]
    stats = json.loads(cli(store, "stats", "--outcome", "abandoned", "--json"))
    assert [s["phase"] for s in stats] == done_before
    table = cli(store, "list")
    assert ("abandoned" in table, "running" in table) == (True, False)


def test_a_restart_on_the_same_host_closes_it(killed: Killed, tmp_path: Path) -> None:
    """The next initialization started on the host records InitializationAbandoned on the
    dead one's log, after its last event, naming the phase and both processes."""
    store = killed.copy(tmp_path)
    last = cli_lines(store, "events", killed.init_id)[-1]
    restart = run_init(store, uuid.uuid4().hex, "-", tmp_path / "unused")
    _, err = restart.communicate(timeout=180)
    assert restart.returncode == 0, err
    closing = cli_lines(store, "events", killed.init_id)[-1]
    assert {k: closing[k] for k in ("sequence", "type")} == {
        "sequence": last["sequence"] + 1, "type": "InitializationAbandoned"}
    assert {k: closing["data"][k] for k in ("phase", "pid", "closed_by_pid")} == {
        "phase": killed.phase, "pid": killed.pid, "closed_by_pid": restart.pid}
    assert closing["data"]["silent_s"] >= BOUND_S
    listed = cli_lines(store, "list", "--outcome", "abandoned")
    assert [(r["init_id"], r["error"].startswith(f"process {killed.pid} on ")) for r in listed] \
        == [(killed.init_id, True)]
    assert [r["outcome"] for r in cli_lines(store, "list", "--outcome", "completed")] == [
        "completed"]
