"""The SQLite store under real processes: concurrent writers and a kill -9 mid-append."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from llm_init import SQLiteEventStore, read_events, replay

ROOT = Path(__file__).resolve().parents[2]


def spawn(path: Path, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.stores.writer", str(path), str(count)],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_concurrent_writer_processes_lose_nothing(tmp_path: Path) -> None:
    """Four processes initializing into one file leave every init complete and contiguous."""
    path = tmp_path / "events.sqlite"
    procs = [spawn(path, 25) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    store = SQLiteEventStore(path, create=False)
    ids = store.list_init_ids(limit=1000)
    assert len(ids) == 100
    for init_id in ids:
        events = read_events(store, init_id)
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        assert replay(events).outcome == "completed"


def test_process_killed_mid_run_leaves_a_readable_log(tmp_path: Path) -> None:
    """kill -9 during appends leaves no torn event: every stored event decodes and each log is
    a gap-free prefix."""
    path = tmp_path / "events.sqlite"
    proc = spawn(path, -1)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "first-done"
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    store = SQLiteEventStore(path, create=False)
    ids = store.list_init_ids(limit=100_000)
    assert len(ids) > 1
    outcomes = []
    for init_id in ids:
        events = read_events(store, init_id)
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        outcomes.append(replay(events).outcome)
    assert outcomes.count("running") <= 1
    assert outcomes.count("completed") == len(ids) - outcomes.count("running")
