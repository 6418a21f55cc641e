"""Specification of ``initialize_node``: phase order, hook order, skips, error policies."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llm_init import (
    CallbackError,
    DefaultSteps,
    Event,
    HookTimeoutError,
    InMemoryEventStore,
    LLMConfig,
    StepError,
    initialize_node,
    initialize_node_sync,
    read_events,
    replay,
)
from tests import recording
from tests.recording import RecordingCallback
from tests.support.logs import PLAIN_RUN
from tests.support.steps import FailingStep, SettingStep, setting_steps

ALL_HOOKS = [
    "on_pre_initialization", "on_pre_download", "on_post_download", "on_pre_placement_group",
    "on_post_placement_group", "on_pre_engine_init", "on_post_engine_init",
    "on_post_initialization",
]


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    recording.CALLS.clear()


def trail(events: list[Event]) -> list[str]:
    """A compact, readable form of the event log: type and what it concerns."""
    out = []
    for e in events:
        what = (getattr(e, "hook", None) or getattr(e, "step", None) or getattr(e, "field", None)
                or getattr(e, "phase", None) or "")
        initialization_level = e.TYPE.startswith("Initialization")
        out.append(f"{e.TYPE}:{what}" if what and not initialization_level else e.TYPE)
    return out


def run(config: LLMConfig, store: InMemoryEventStore, steps: DefaultSteps | None = None
        ) -> list[Event]:
    ctx = initialize_node_sync(config, event_store=store, steps=steps or setting_steps())
    return read_events(store, ctx.init_id)


def test_plain_run_calls_all_eight_hooks_in_order(store: InMemoryEventStore) -> None:
    """A callback implementing every hook sees them fire once each, in phase order."""
    run(LLMConfig(model_id="m", callback_class=RecordingCallback), store)
    assert [f"cb.{h}" for h in ALL_HOOKS] == recording.CALLS


def test_plain_run_records_the_full_event_sequence(store: InMemoryEventStore) -> None:
    """The log of a plain run is exactly phases, hooks, steps and their context changes."""
    events = run(LLMConfig(model_id="m", callback_class=RecordingCallback), store)
    assert trail(events) == PLAIN_RUN
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))


@pytest.mark.parametrize(("hook", "step"), [
    ("on_pre_download", "download"),
    ("on_pre_placement_group", "placement_group"),
    ("on_pre_engine_init", "engine"),
])
def test_pre_hook_returning_false_skips_only_its_step(store: InMemoryEventStore, hook: str,
                                                      step: str) -> None:
    """False from one pre-hook skips that step; every hook still fires; the skip names the
    callback."""
    steps = setting_steps()
    events = run(LLMConfig(model_id="m", callback_class=RecordingCallback,
                           callback_kwargs={"returns": {hook: False}}), store, steps)
    assert [f"cb.{h}" for h in ALL_HOOKS] == recording.CALLS
    ran = {name: steps.for_name(name).calls for name in ("download", "placement_group", "engine")}
    assert ran == {n: (0 if n == step else 1) for n in ran}
    skips = [e for e in events if e.TYPE == "PhaseSkipped"]
    assert [(s.step, s.skipped_by, s.hook) for s in skips] == [  # type: ignore[attr-defined]  # a field of the Event subclass read
        (step, "tests.recording.RecordingCallback", hook)]


def test_false_from_pre_initialization_skips_every_step(store: InMemoryEventStore) -> None:
    """False from on_pre_initialization skips all three steps yet every hook still fires."""
    steps = setting_steps()
    events = run(LLMConfig(model_id="m", callback_class=RecordingCallback,
                           callback_kwargs={"returns": {"on_pre_initialization": False}}),
                 store, steps)
    assert [f"cb.{h}" for h in ALL_HOOKS] == recording.CALLS
    assert [steps.for_name(n).calls for n in ("download", "placement_group", "engine")] == [0, 0, 0]
    assert [(e.step, e.hook) for e in events if e.TYPE == "PhaseSkipped"] == [  # type: ignore[attr-defined]  # a field of the Event subclass read
        ("download", "on_pre_initialization"), ("placement_group", "on_pre_initialization"),
        ("engine", "on_pre_initialization")]


def test_several_callbacks_run_in_configured_order(store: InMemoryEventStore) -> None:
    """With a list of callbacks, each hook runs every callback in list order."""
    run(LLMConfig(model_id="m", callback_class=[RecordingCallback, RecordingCallback],
                  callback_kwargs=[{"tag": "a"}, {"tag": "b"}]), store)
    assert [f"{t}.{h}" for h in ALL_HOOKS for t in ("a", "b")] == recording.CALLS


@pytest.mark.parametrize("hook", ALL_HOOKS)
def test_failing_hook_aborts_by_default_and_names_the_culprit(store: InMemoryEventStore,
                                                              hook: str) -> None:
    """A raising hook stops the run with an error naming callback and hook, chained to the
    cause, and the log ends with the failure."""
    config = LLMConfig(model_id="m", callback_class=RecordingCallback,
                       callback_kwargs={"raises_in": hook})
    with pytest.raises(CallbackError) as info:
        initialize_node_sync(config, event_store=store, steps=setting_steps())
    assert f"tests.recording.RecordingCallback failed in {hook}" in str(info.value)
    assert isinstance(info.value.__cause__, ValueError)
    assert [f"cb.{h}" for h in ALL_HOOKS[: ALL_HOOKS.index(hook) + 1]] == recording.CALLS
    (init_id,) = store.list_init_ids()
    tail = trail(read_events(store, init_id))[-3:]
    assert tail[0] == f"HookFailed:{hook}"
    assert tail[1].startswith("PhaseFailed:")
    assert tail[2] == "InitializationFailed"


@pytest.mark.parametrize("hook", ALL_HOOKS)
def test_failing_hook_is_recorded_and_skipped_when_errors_do_not_raise(
        store: InMemoryEventStore, hook: str) -> None:
    """With raise_error_on_callback=False a failing hook is recorded and the run completes."""
    events = run(LLMConfig(model_id="m", callback_class=RecordingCallback,
                           callback_kwargs={"raises_in": hook}, raise_error_on_callback=False),
                 store)
    assert [f"cb.{h}" for h in ALL_HOOKS] == recording.CALLS
    failed = [e for e in events if e.TYPE == "HookFailed"]
    assert [(f.hook, f.error_type, f.aborted) for f in failed] == [  # type: ignore[attr-defined]  # a field of the Event subclass read
        (hook, "ValueError", False)]
    assert events[-1].TYPE == "InitializationCompleted"


class AsyncCallback:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def on_pre_download(self, ctx: Any) -> bool:
        await asyncio.sleep(0)
        self.seen.append("pre_download")
        ctx.custom_data["async"] = True
        return False

    async def on_post_initialization(self, ctx: Any) -> None:
        await asyncio.sleep(0)
        self.seen.append(f"post:{ctx.custom_data['async']}")


def test_async_hooks_are_awaited_and_can_skip(store: InMemoryEventStore) -> None:
    """async def hooks are awaited in order, can change the context and can skip a step."""
    config = LLMConfig(model_id="m", callback_class=AsyncCallback)
    steps = setting_steps()
    ctx = initialize_node_sync(config, event_store=store, steps=steps)
    cb = config.get_or_create_callback()
    assert isinstance(cb, AsyncCallback)
    assert cb.seen == ["pre_download", "post:True"]
    assert steps.download.calls == 0  # type: ignore[attr-defined]  # a SettingStep's counter
    assert ctx.download_result is None


class HangingCallback:
    def on_pre_download(self, ctx: Any) -> None:
        import time
        time.sleep(5)


class AsyncHangingCallback:
    async def on_pre_engine_init(self, ctx: Any) -> None:
        await asyncio.sleep(5)


@pytest.mark.parametrize("cls", [HangingCallback, AsyncHangingCallback])
def test_hung_hook_becomes_a_named_timeout_failure(store: InMemoryEventStore, cls: type) -> None:
    """A hook running past hook_timeout_s fails with HookTimeoutError, recorded as timed out."""
    config = LLMConfig(model_id="m", callback_class=cls, hook_timeout_s=0.2)
    with pytest.raises(HookTimeoutError, match=r"did not return within 0.2 s") as info:
        initialize_node_sync(config, event_store=store, steps=setting_steps())
    assert info.value.callback.endswith(cls.__qualname__)
    (init_id,) = store.list_init_ids()
    failed = [e for e in read_events(store, init_id) if e.TYPE == "HookFailed"]
    assert [f.timed_out for f in failed] == [True]  # type: ignore[attr-defined]  # a field of the Event subclass read


def test_unconfigured_default_step_fails_with_instructions(store: InMemoryEventStore) -> None:
    """Without real steps the download step fails clearly instead of pretending."""
    with pytest.raises(StepError, match=r"no download step is configured"):
        initialize_node_sync(LLMConfig(model_id="m"), event_store=store)
    (init_id,) = store.list_init_ids()
    assert replay(read_events(store, init_id)).outcome == "failed"


def test_failing_step_fails_its_phase_with_the_step_message(store: InMemoryEventStore) -> None:
    """A step that raises fails its phase; the error and the log carry the original message."""
    steps = DefaultSteps(download=SettingStep("download_result", {"path": "/m"}),
                         placement_group=SettingStep("placement_group", None),
                         engine=FailingStep("bad engine kwarg 'max_model_len'"))
    with pytest.raises(StepError, match="bad engine kwarg") as info:
        initialize_node_sync(LLMConfig(model_id="m"), event_store=store, steps=steps)
    assert info.value.phase == "engine_init"
    (init_id,) = store.list_init_ids()
    events = read_events(store, init_id)
    assert trail(events)[-4:] == ["StepStarted:engine", "StepFailed:engine",
                                  "PhaseFailed:engine_init", "InitializationFailed"]


def test_async_entry_point_returns_the_final_context(store: InMemoryEventStore) -> None:
    """``await initialize_node`` gives the context with every step's result in it."""
    ctx = asyncio.run(initialize_node(LLMConfig(model_id="m"), event_store=store,
                                      steps=setting_steps()))
    assert ctx.download_result == {"path": "/models/tiny", "bytes": 1234}
    assert ctx.engine == "engine-handle"


def test_sync_twin_works_inside_a_running_loop(store: InMemoryEventStore) -> None:
    """initialize_node_sync can be called from code already running an event loop."""
    async def caller() -> str:
        return initialize_node_sync(LLMConfig(model_id="m"), event_store=store,
                                    steps=setting_steps()).engine  # type: ignore[no-any-return]  # ctx.engine is Any
    assert asyncio.run(caller()) == "engine-handle"
