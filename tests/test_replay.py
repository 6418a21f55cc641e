"""Specification of replay: the log rebuilds the live result and any earlier state."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from llm_init import (
    InMemoryEventStore,
    LLMConfig,
    PhaseStarted,
    SQLiteEventStore,
    initialize_node_sync,
    read_events,
    replay,
)
from tests.support.callbacks import Busy
from tests.support.steps import setting_steps


def test_replaying_a_finished_log_gives_the_live_result(tmp_path: Any) -> None:
    """The state replayed from a SQLite log equals the JSON-safe view of the returned context."""
    store = SQLiteEventStore(tmp_path / "events.sqlite")
    ctx = initialize_node_sync(LLMConfig(model_id="m", callback_class=Busy), event_store=store,
                               steps=setting_steps())
    reopened = SQLiteEventStore(tmp_path / "events.sqlite", create=False)
    replayed = replay(read_events(reopened, ctx.init_id))
    assert replayed.state == ctx.snapshot()
    assert replayed.outcome == "completed"
    assert replayed.state["custom_data"] == {"n": 2}


def test_replay_upto_shows_the_state_at_that_event() -> None:
    """Replaying up to a sequence number gives the context as it stood then."""
    store = InMemoryEventStore()
    ctx = initialize_node_sync(LLMConfig(model_id="m", callback_class=Busy), event_store=store,
                               steps=setting_steps())
    events = read_events(store, ctx.init_id)
    first_n = next(e.sequence for e in events
                   if e.TYPE == "ContextChanged" and e.key == "n")  # type: ignore[attr-defined]  # a field of the Event subclass read
    at = replay(events, upto=first_n)
    assert at.state["custom_data"] == {"gone": "soon", "n": 1}
    assert at.outcome == "running"
    assert at.current_phase == "download"


def test_secrets_in_the_context_are_masked_in_the_log() -> None:
    """A token placed in runtime_env is recorded masked, never in clear."""
    store = InMemoryEventStore()
    ctx = initialize_node_sync(LLMConfig(model_id="m", callback_class=Busy), event_store=store,
                               steps=setting_steps())
    states = [r.state for r in store.read(ctx.init_id)]
    assert not any("hf_secretsecret" in s for s in states)
    assert replay(read_events(store, ctx.init_id)).state["runtime_env"] == {
        "env_vars": {"A": "1", "HF_TOKEN": "***"}}


def test_timeline_lists_phases_steps_and_hooks_with_status() -> None:
    """The timeline projection has one entry per phase, step and hook call, all completed."""
    store = InMemoryEventStore()
    ctx = initialize_node_sync(LLMConfig(model_id="m", callback_class=Busy), event_store=store,
                               steps=setting_steps())
    timeline = replay(read_events(store, ctx.init_id)).timeline
    assert [(e.kind, e.name) for e in timeline] == [
        ("phase", "pre_initialization"), ("hook", "on_pre_initialization"),
        ("phase", "download"), ("hook", "on_pre_download"), ("step", "download"),
        ("hook", "on_post_download"),
        ("phase", "placement_group"), ("step", "placement_group"),
        ("phase", "engine_init"), ("hook", "on_pre_engine_init"), ("step", "engine"),
        ("phase", "post_initialization"),
    ]
    assert {e.status for e in timeline} == {"completed"}
    assert all(e.duration_s is not None and e.duration_s >= 0 for e in timeline)


def test_a_subclass_of_an_event_type_replays_as_that_type() -> None:
    """An event of a subclass of ``PhaseStarted`` opens the phase as ``PhaseStarted`` does."""

    @dataclass(frozen=True, slots=True, kw_only=True)
    class TimedPhaseStarted(PhaseStarted):
        clock: str = "monotonic"

    store = InMemoryEventStore()
    ctx = initialize_node_sync(LLMConfig(model_id="m"), event_store=store, steps=setting_steps())
    events = [TimedPhaseStarted(**{f.name: getattr(e, f.name) for f in fields(e)})
              if type(e) is PhaseStarted else e for e in read_events(store, ctx.init_id)]
    assert replay(events).timeline == replay(read_events(store, ctx.init_id)).timeline
