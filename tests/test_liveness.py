"""Specification of liveness: the heartbeat an initialization records, how readers judge a
silent one abandoned, which processes count as gone, and the start-up sweep that closes the
initializations of dead processes on this host."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from llm_init import (
    HeartbeatRecorded,
    InitializationAbandoned,
    InitializationStarted,
    LLMConfig,
    initialize_node_sync,
    read_events,
    replay,
)
from llm_init.fleet import FleetFollower
from llm_init.heartbeat import close_abandoned
from llm_init.liveness import HeartbeatConfigError, heartbeat_interval, process_alive
from llm_init.stores import (
    EventStore,
    InitQuery,
    InMemoryEventStore,
    SQLiteEventStore,
    encode,
)
from llm_init.telemetry.backends import PrometheusBackend
from llm_init.telemetry.metrics import MetricsCallback
from tests.support.logs import T0, synthetic_log
from tests.support.steps import CallingStep, setting_steps
from tests.support.steps import local_steps as steps_with

HOST = socket.gethostname()


def unfinished(init_id: str = "x", *, interval_s: float | None = 5.0, host: str = "host-a",
               pid: int = 1, started_at: datetime = T0, beats_after_s: tuple[float, ...] = ()
               ) -> list[InitializationStarted | HeartbeatRecorded]:
    """An init left inside download, declaring ``interval_s``, with heartbeats at the given
    seconds after its start."""
    events = synthetic_log(init_id, outcome="running", started_at=started_at, host=host)
    first = events[0]
    assert isinstance(first, InitializationStarted)
    events[0] = dataclasses.replace(first, heartbeat_interval_s=interval_s, pid=pid)
    for after in beats_after_s:
        events.append(HeartbeatRecorded(init_id=init_id, sequence=len(events) + 1,
                                        timestamp=started_at + timedelta(seconds=after),
                                        interval_s=interval_s or 0.0))
    return events  # type: ignore[return-value]  # only the two types it declares


def dead_pid() -> int:
    """The pid of a process that ran here and is gone (reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def seconds(s: float) -> datetime:
    return T0 + timedelta(seconds=s)


# -- readers' judgement -------------------------------------------------------------------


def test_replay_calls_a_silent_init_abandoned_after_three_intervals() -> None:
    """With a 5 s interval and its last beat at +10 s, replay says running at +24.9 s and
    abandoned at +25.1 s, with the time of that beat in the reason and its open phase
    marked abandoned."""
    events = unfinished(beats_after_s=(5.0, 10.0))
    assert replay(events, now=seconds(24.9)).outcome == "running"
    r = replay(events, now=seconds(25.1))
    assert (r.outcome, r.current_phase) == ("abandoned", "download")
    assert r.error is not None
    assert r.error.startswith("no heartbeat since 2025-01-01 12:00:10 UTC")
    assert [(e.name, e.status) for e in r.timeline if e.kind == "phase"] == [
        ("pre_initialization", "completed"), ("download", "abandoned")]


def test_a_log_that_declares_no_heartbeat_is_never_abandoned_by_time() -> None:
    """A log written with heartbeats off, or before them, reads running however old."""
    events = unfinished(interval_s=None)
    assert replay(events, now=seconds(10 * 86400)).outcome == "running"


def test_replay_up_to_an_event_shows_the_state_then_unjudged() -> None:
    """``replay(..., upto=N)`` of a silent log is the state after event N: running."""
    events = unfinished(beats_after_s=(5.0,))
    assert replay(events, upto=3, now=seconds(3600)).outcome == "running"


def test_a_recorded_abandonment_reads_abandoned_with_its_reason() -> None:
    """``InitializationAbandoned`` ends the log: abandoned at any time, its reason as error."""
    events = [*unfinished(), InitializationAbandoned(
        init_id="x", sequence=len(unfinished()) + 1, timestamp=seconds(1.0),
        reason="process 7 on host-a is gone", phase="download", host="host-a", pid=7,
        closed_by_pid=8)]
    r = replay(events, now=seconds(1.0))
    assert (r.outcome, r.error) == ("abandoned", "process 7 on host-a is gone")


def test_the_follower_drops_an_init_that_goes_silent_without_a_store_read() -> None:
    """``status --follow``: an init in progress whose heartbeat stops is reported abandoned
    once past its bound and leaves the in-progress list."""
    store = InMemoryEventStore()
    store.append([encode(e) for e in unfinished(interval_s=0.1, started_at=datetime.now(UTC))])
    follower = FleetFollower(store)
    assert [(s.init_id, s.outcome) for s in follower.refresh()] == [("x", "running")]
    time.sleep(0.5)
    assert [(s.init_id, s.outcome) for s in follower.expire()] == [("x", "abandoned")]
    assert follower.running == []


def test_the_follower_reports_an_init_going_silent_once() -> None:
    """Followed with a query made at its start (as the CLI makes it), an init whose
    heartbeat stops is reported abandoned once, not again at every later refresh."""
    store = InMemoryEventStore()
    store.append([encode(e) for e in unfinished(interval_s=0.1, started_at=datetime.now(UTC))])
    follower = FleetFollower(store, InitQuery(now=datetime.now(UTC)))
    assert [s.outcome for s in follower.refresh()] == ["running"]
    time.sleep(0.5)
    assert [s.outcome for s in follower.refresh()] == ["abandoned"]
    assert follower.refresh() == []


# -- the heartbeat ------------------------------------------------------------------------


def test_heartbeats_continue_while_a_step_blocks_the_event_loop() -> None:
    """A step blocking the event loop for 1 s with a 0.1 s interval still gets heartbeats,
    all of them before the initialization's end, and the log declares the interval."""
    store = InMemoryEventStore()
    ctx = initialize_node_sync(LLMConfig(model_id="m"), event_store=store,
                               steps=steps_with(engine=CallingStep(lambda _: time.sleep(1.0))),
                               heartbeat_interval_s=0.1)
    events = read_events(store, ctx.init_id)
    first = events[0]
    assert isinstance(first, InitializationStarted)
    assert first.heartbeat_interval_s == 0.1
    beats = [e.sequence for e in events if isinstance(e, HeartbeatRecorded)]
    assert len(beats) >= 3
    assert max(beats) < events[-1].sequence
    assert events[-1].TYPE == "InitializationCompleted"


def test_interval_zero_records_no_heartbeat_and_declares_none() -> None:
    """``heartbeat_interval_s=0`` turns heartbeats off: none recorded, none declared."""
    store = InMemoryEventStore()
    ctx = initialize_node_sync(LLMConfig(model_id="m"), event_store=store,
                               steps=steps_with(engine=CallingStep(lambda _: time.sleep(0.3))),
                               heartbeat_interval_s=0)
    events = read_events(store, ctx.init_id)
    assert not any(isinstance(e, HeartbeatRecorded) for e in events)
    assert getattr(events[0], "heartbeat_interval_s", "missing") is None


def test_the_interval_comes_from_the_environment() -> None:
    """``LLM_INIT_HEARTBEAT_INTERVAL_S`` sets the interval; unset, it is 5 s."""
    assert heartbeat_interval(environ={"LLM_INIT_HEARTBEAT_INTERVAL_S": "0.5"}) == 0.5
    assert heartbeat_interval(environ={}) == 5.0


@pytest.mark.parametrize(("environ", "value", "message"), [
    ({"LLM_INIT_HEARTBEAT_INTERVAL_S": "5s"}, None,
     "LLM_INIT_HEARTBEAT_INTERVAL_S='5s' is not a number of seconds"),
    ({"LLM_INIT_HEARTBEAT_INTERVAL_S": "-1"}, None,
     "LLM_INIT_HEARTBEAT_INTERVAL_S must be a finite number of seconds >= 0"),
    ({}, float("nan"), "heartbeat_interval_s must be a finite number of seconds >= 0"),
], ids=["unit", "negative", "nan"])
def test_a_bad_interval_is_refused_naming_where_it_came_from(
        environ: dict[str, str], value: float | None, message: str) -> None:
    """A heartbeat interval that is no usable number of seconds is a one-line error naming
    the variable or argument."""
    with pytest.raises(HeartbeatConfigError, match=message.replace("(", r"\(")):
        heartbeat_interval(value, environ=environ)


# -- which processes are gone -------------------------------------------------------------


def test_a_reaped_process_is_gone() -> None:
    """A pid whose process exited and was reaped is not alive."""
    assert process_alive(dead_pid(), datetime.now(UTC)) is False


def test_a_killed_but_unreaped_process_is_gone() -> None:
    """A zombie (killed, its parent not yet waiting) is not alive."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = datetime.now(UTC)
        os.kill(proc.pid, signal.SIGKILL)
        time.sleep(0.5)
        assert process_alive(proc.pid, started) is False
    finally:
        proc.wait()


def test_a_running_process_is_alive() -> None:
    """A live process that started before the init it would own is alive."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.2)
        assert process_alive(proc.pid, datetime.now(UTC)) is True
    finally:
        proc.kill()
        proc.wait()


def test_a_pid_reused_by_a_later_process_is_not_the_one_that_started_the_init() -> None:
    """This process's own pid, for an init started a minute before this process (a
    container restarted with the same pid), counts as gone."""
    assert process_alive(os.getpid(), datetime.now(UTC) - timedelta(hours=1)) is False
    assert process_alive(os.getpid(), datetime.now(UTC)) is True


# -- the start-up sweep -------------------------------------------------------------------


def store_with(tmp_path: Path, *logs: list[InitializationStarted | HeartbeatRecorded]
               ) -> EventStore:
    store = SQLiteEventStore(tmp_path / "events.sqlite")
    for log in logs:
        store.append([encode(e) for e in log])
    return store


def test_the_sweep_closes_only_silent_inits_of_dead_processes_on_this_host(
        tmp_path: Path) -> None:
    """Of four unfinished inits, only the one on this host, with its process gone and
    silent for two intervals, is closed; a live process's, another host's, and one heard
    from within two intervals stay open."""
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(1.5)  # its init starts after it (allowing for the whole-second boot time)
        long_ago = datetime.now(UTC) - timedelta(seconds=60)
        just_now = datetime.now(UTC)
        store = store_with(
            tmp_path,
            unfinished("dead", host=HOST, pid=dead_pid(), started_at=long_ago),
            unfinished("live", host=HOST, pid=live.pid, started_at=just_now, interval_s=None),
            unfinished("elsewhere", host="another-host", pid=dead_pid(), started_at=long_ago),
            unfinished("recent", host=HOST, pid=dead_pid(), started_at=just_now),
        )
        closed = close_abandoned(store, host=HOST)
    finally:
        live.kill()
        live.wait()
    assert [(e.init_id, e.phase, e.host) for e in closed] == [("dead", "download", HOST)]
    assert [r.topic for r in store.read("dead")][-1] == "InitializationAbandoned"
    for init_id in ("live", "elsewhere", "recent"):
        assert [r.topic for r in store.read(init_id)][-1] == "PhaseStarted"


def test_a_second_sweep_leaves_a_closed_init_alone(tmp_path: Path) -> None:
    """Two processes starting on the host close a dead init once between them."""
    store = store_with(tmp_path, unfinished(
        "dead", host=HOST, pid=dead_pid(),
        started_at=datetime.now(UTC) - timedelta(seconds=60)))
    assert [e.init_id for e in close_abandoned(store, host=HOST)] == ["dead"]
    assert close_abandoned(store, host=HOST) == []
    assert [r.topic for r in store.read("dead")].count("InitializationAbandoned") == 1


def test_an_initialization_starting_counts_the_dead_one_it_closes_in_metrics(
        tmp_path: Path) -> None:
    """The initialization that closes a dead process's init counts it in
    ``llm_init_initializations_total`` as abandoned, under the dead init's model."""
    dead = unfinished("dead", host=HOST, pid=dead_pid(),
                      started_at=datetime.now(UTC) - timedelta(seconds=60))
    dead[0] = dataclasses.replace(dead[0], model_id="dead-model")  # type: ignore[call-arg]  # dead[0] is an InitializationStarted
    store = store_with(tmp_path, dead)
    registry = CollectorRegistry()
    initialize_node_sync(LLMConfig(model_id="m"), event_store=store, steps=setting_steps(),
                         observers=[MetricsCallback(PrometheusBackend(registry, port=None))])
    counted = registry.get_sample_value("llm_init_initializations_total",
                                        {"model": "dead-model", "outcome": "abandoned"})
    assert counted == 1.0
    assert replay(read_events(store, "dead")).outcome == "abandoned"
