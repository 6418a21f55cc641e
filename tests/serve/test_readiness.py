"""Specification of the readiness mark: the replica's first passed health check goes on record
after its initialization, once."""

from __future__ import annotations

import time
from pathlib import Path

from llm_init import (
    LLMConfig,
    ReplicaReady,
    SQLiteEventStore,
    initialize_node_sync,
    read_events,
    replay,
)
from llm_init.serve.readiness import ReadinessMark
from tests.support.steps import setting_steps


def finished_log(path: Path) -> str:
    store = SQLiteEventStore(path)
    ctx = initialize_node_sync(LLMConfig(model_id="tiny"), event_store=store, steps=setting_steps())
    store.close()
    return ctx.init_id


def events_of(path: Path, init_id: str) -> list:
    store = SQLiteEventStore(path)
    try:
        return read_events(store, init_id)
    finally:
        store.close()


def test_readiness_is_appended_after_the_completion_with_the_time_since(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    init_id = finished_log(path)
    time.sleep(0.2)
    event = ReadinessMark(f"sqlite:///{path}", init_id).record()
    events = events_of(path, init_id)
    assert events[-1] == event
    assert isinstance(event, ReplicaReady)
    assert event.sequence == events[-2].sequence + 1
    assert 0.2 <= event.since_initialization_s < 5.0
    r = replay(events)
    assert r.outcome == "completed"
    assert r.ready_s == event.since_initialization_s
    assert r.startup_s == r.duration_s + event.since_initialization_s


def test_only_the_first_health_check_is_recorded(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite"
    init_id = finished_log(path)
    mark = ReadinessMark(str(path), init_id)
    mark.record()
    assert mark.record() is None
    assert sum(isinstance(e, ReplicaReady) for e in events_of(path, init_id)) == 1


def test_the_recorded_readiness_goes_to_the_observers(tmp_path: Path) -> None:
    """The metrics callback watches the replica after its initialization too."""
    path = tmp_path / "events.sqlite"
    init_id = finished_log(path)
    seen: list[object] = []

    class Watcher:
        def on_event(self, event: object) -> None:
            seen.append(event)

    event = ReadinessMark(str(path), init_id, [Watcher()]).record()
    assert seen == [event]


def test_a_store_in_memory_gets_nothing() -> None:
    assert ReadinessMark("memory://", "any").record() is None


def test_a_store_error_is_not_raised(tmp_path: Path) -> None:
    """A health check must not fail over bookkeeping: an unknown initialization (here, a log
    that is not there) records nothing and raises nothing."""
    path = tmp_path / "events.sqlite"
    finished_log(path)
    assert ReadinessMark(str(path), "no-such-init").record() is None
