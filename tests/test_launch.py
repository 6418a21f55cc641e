"""Specification of the replica launch record: the start-up time before the initialization."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from llm_init import (
    InitializationStarted,
    InMemoryEventStore,
    LLMConfig,
    ReplicaLaunch,
    ReplicaLaunched,
    SQLiteEventStore,
    initialize_node_sync,
    read_events,
    replay,
)
from llm_init.cli import app
from llm_init.launch import process_started_at
from tests.support.steps import setting_steps


def test_scheduling_runs_from_the_build_to_the_process_start_and_boot_from_there() -> None:
    launch = ReplicaLaunch(app_built_at=100.0, process_started_at=103.0)
    assert launch.segments(now=110.0) == (3.0, 7.0)


def test_a_process_started_before_the_build_boots_from_the_build() -> None:
    """A worker started ahead of the deploy was not waiting for it: no scheduling time, and
    its boot counts only from the deploy request."""
    launch = ReplicaLaunch(app_built_at=100.0, process_started_at=90.0)
    assert launch.segments(now=110.0) == (0.0, 10.0)


def test_an_unknown_build_time_leaves_scheduling_unknown() -> None:
    assert ReplicaLaunch(process_started_at=103.0).segments(now=110.0) == (None, 7.0)


def test_process_start_time_is_read_for_a_real_process() -> None:
    """A child started now reads as started now (to /proc's 10 ms ticks), not at boot."""
    before = time.time()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        started = process_started_at(child.pid)
    finally:
        child.kill()
        child.wait()
    assert started is not None
    assert before - 0.05 <= started <= time.time() + 0.05


def test_a_launch_is_recorded_right_after_the_start_and_replayed() -> None:
    store = InMemoryEventStore()
    now = time.time()
    ctx = initialize_node_sync(LLMConfig(model_id="tiny"), event_store=store, steps=setting_steps(),
                               launch=ReplicaLaunch(app_built_at=now - 9.0,
                                                    process_started_at=now - 6.0))
    events = read_events(store, ctx.init_id)
    assert isinstance(events[0], InitializationStarted)
    assert isinstance(events[1], ReplicaLaunched)
    r = replay(events)
    assert r.scheduling_s is not None
    assert abs(r.scheduling_s - 3.0) < 0.01
    assert r.boot_s is not None
    assert 6.0 <= r.boot_s < 7.0
    assert r.duration_s is not None
    assert r.startup_s is not None
    assert abs(r.startup_s - (r.scheduling_s + r.boot_s + r.duration_s)) < 1e-9


def test_without_a_launch_nothing_is_recorded_before_the_phases() -> None:
    store = InMemoryEventStore()
    ctx = initialize_node_sync(LLMConfig(model_id="tiny"), event_store=store, steps=setting_steps())
    r = replay(read_events(store, ctx.init_id))
    assert not any(isinstance(e, ReplicaLaunched) for e in read_events(store, ctx.init_id))
    assert (r.scheduling_s, r.boot_s) == (None, None)
    assert r.startup_s == r.duration_s


def test_timeline_explains_the_time_before_the_initialization(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    now = time.time()
    ctx = initialize_node_sync(LLMConfig(model_id="tiny"), event_store=SQLiteEventStore(path),
                               steps=setting_steps(),
                               launch=ReplicaLaunch(app_built_at=now - 14.0,
                                                    process_started_at=now - 12.0))
    runner = CliRunner()
    text = runner.invoke(app, ["timeline", ctx.init_id, "--store", str(path)],
                         env={"COLUMNS": "200"}).output
    assert "scheduling 2.00 s" in text
    assert "replica boot 12." in text
    data = json.loads(runner.invoke(app, ["timeline", ctx.init_id, "--store", str(path),
                                          "--json"]).output)
    assert abs(data["launch"]["scheduling_s"] - 2.0) < 0.01
    assert data["launch"]["startup_s"] > 14.0
