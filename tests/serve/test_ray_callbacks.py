"""A ray.serve.llm ``CallbackBase`` under llm-init: each hook once, at its point, recorded like
any hook, with its context changes carried over. No Serve needed: the adapter runs in
``initialize_node`` with simple steps."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import ray.serve.llm  # noqa: F401  # a missing install must fail, not skip
from ray.llm._internal.common.callbacks.base import CallbackBase
from ray.llm._internal.common.utils.download_utils import NodeModelDownloadable
from ray.serve.llm import LLMConfig as RayLLMConfig

from llm_init import CallbackError, InMemoryEventStore, initialize_node, read_events
from llm_init.events import (
    ContextChanged,
    Event,
    HookCompleted,
    HookFailed,
    HookStarted,
    InitializationCompleted,
    PhaseSkipped,
)
from llm_init.serve.configs import llm_init_config
from llm_init.serve.ray_callbacks import hooks_already_ran
from llm_init.serve.settings import LLMInitSettings, ServeConfigError
from tests.support.steps import setting_steps

ADAPTER = f"llm_init.serve.ray_callbacks.RayCallback[{__name__}.UserRayCallback]"


class UserRayCallback(CallbackBase):
    """What a ray.serve.llm user has: hooks that log and change the context."""

    def __init__(self, *args: Any, behaviour: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.behaviour = behaviour
        self.calls: list[tuple[str, Any]] = []

    async def on_before_node_init(self) -> None:
        self.calls.append(("on_before_node_init", None))
        if self.behaviour == "raise":
            raise ValueError("no GPUs today")
        self.ctx.custom_data["origin"] = "ray"
        self.ctx.runtime_env = {"env_vars": {"FROM_RAY": "1"}}
        self.ctx.worker_node_download_model = NodeModelDownloadable.TOKENIZER_ONLY
        if self.behaviour == "no_init_node":
            self.ctx.run_init_node = False
        if self.behaviour == "exclude_safetensors":
            self.ctx.worker_node_download_model = NodeModelDownloadable.EXCLUDE_SAFETENSORS

    def on_before_download_model_files_distributed(self) -> None:
        self.calls.append(("on_before_download_model_files_distributed", None))

    async def on_after_node_init(self) -> None:
        hf_model_id = self.llm_config.get_engine_config().hf_model_id
        self.calls.append(("on_after_node_init", hf_model_id))


def ray_setup(behaviour: str = "", raise_error: bool = True) -> tuple[Any, UserRayCallback]:
    ray_config = RayLLMConfig(model_loading_config={"model_id": "m", "model_source": "hub/m"},
                              callback_config={"callback_class": UserRayCallback,
                                               "raise_error_on_callback": raise_error})
    callback = UserRayCallback(llm_config=ray_config, raise_error_on_callback=raise_error,
                               behaviour=behaviour, ctx_kwargs={
                                   "worker_node_download_model":
                                       NodeModelDownloadable.MODEL_AND_TOKENIZER,
                                   "runtime_env": {"env_vars": {}}})
    return ray_config, callback


def initialize(ray_config: Any, callback: UserRayCallback) -> list[Event]:
    store = InMemoryEventStore()
    config = llm_init_config(ray_config, LLMInitSettings(), callback)
    try:
        asyncio.run(initialize_node(config, event_store=store, steps=setting_steps()))
    finally:
        events = read_events(store, store.list_init_ids()[0])
    return events


def test_each_ray_hook_runs_once_at_its_point_and_is_recorded():
    """on_before_node_init first, the download hook before the download, on_after_node_init
    after it with the engine pointing at the downloaded model; each as an llm-init hook."""
    ray_config, callback = ray_setup()
    events = initialize(ray_config, callback)
    assert callback.calls == [("on_before_node_init", None),
                              ("on_before_download_model_files_distributed", None),
                              ("on_after_node_init", "/models/tiny")]
    assert [(e.phase, e.hook) for e in events
            if isinstance(e, HookCompleted) and e.callback == ADAPTER] == [
        ("pre_initialization", "on_pre_initialization"), ("download", "on_pre_download"),
        ("download", "on_post_download")]


def test_ray_context_changes_take_effect():
    """custom_data, runtime_env and the download mode the Ray hook set are llm-init's now,
    recorded as changed by the Ray callback."""
    ray_config, callback = ray_setup()
    events = initialize(ray_config, callback)
    changes = {(e.field, e.key): e.new for e in events
               if isinstance(e, ContextChanged) and e.changed_by == ADAPTER}
    assert changes == {
        ("custom_data", "origin"): "ray",
        ("runtime_env", None): {"env_vars": {"FROM_RAY": "1"}},
        ("worker_node_download_model", None): "TOKENIZER_ONLY",
        ("local_node_download_model", None): "TOKENIZER_ONLY",
    }


def test_run_init_node_false_skips_the_download_and_its_hook():
    """As in Ray: no node initialization, so no download and no download hook, but
    on_after_node_init still runs."""
    ray_config, callback = ray_setup("no_init_node")
    events = initialize(ray_config, callback)
    assert [c for c, _ in callback.calls] == ["on_before_node_init", "on_after_node_init"]
    (skipped,) = [e for e in events if isinstance(e, PhaseSkipped)]
    assert (skipped.phase, skipped.skipped_by, skipped.hook) == (
        "download", ADAPTER, "on_pre_download")


def test_a_failing_ray_hook_fails_the_initialization_naming_the_callback():
    """With Ray's raise_error_on_callback (the default) the error names the Ray class."""
    ray_config, callback = ray_setup("raise")
    with pytest.raises(CallbackError, match=r"RayCallback\[.*UserRayCallback\] failed in "
                                            r"on_pre_initialization.*no GPUs today"):
        initialize(ray_config, callback)


def test_raise_error_on_callback_false_records_the_failure_and_goes_on():
    """Ray's raise_error_on_callback=False keeps its meaning (the rest runs), and the failure
    is recorded as one, with Ray's error text, as for an llm-init callback."""
    ray_config, callback = ray_setup("raise", raise_error=False)
    events = initialize(ray_config, callback)
    (failed,) = [e for e in events if isinstance(e, HookFailed)]
    assert (failed.callback, failed.hook, failed.ray_hook, failed.aborted) == (
        ADAPTER, "on_pre_initialization", "on_before_node_init", False)
    assert failed.message == ("Exception: Error running callback method 'on_before_node_init' "
                              "on UserRayCallback: no GPUs today")
    assert not [e for e in events if isinstance(e, HookCompleted)
                and e.hook == "on_pre_initialization" and e.callback == ADAPTER]
    assert [c for c, _ in callback.calls][-1] == "on_after_node_init"
    assert isinstance(events[-1], InitializationCompleted)


def test_raise_error_on_callback_is_the_ray_callbacks_own():
    """A Ray callback's raise_error_on_callback=True fails the initialization even where
    llm-init's own callbacks may fail without stopping it."""
    ray_config, callback = ray_setup("raise", raise_error=True)
    config = llm_init_config(ray_config, LLMInitSettings(raise_error_on_callback=False),
                             callback)
    with pytest.raises(CallbackError, match="no GPUs today"):
        asyncio.run(initialize_node(config, event_store=InMemoryEventStore(),
                                    steps=setting_steps()))


def test_the_overlap_setting_reaches_the_replicas_llm_config():
    """``overlap_weights`` in llm-init's Serve settings turns it on for the initialization."""
    ray_config, callback = ray_setup()
    assert llm_init_config(ray_config, LLMInitSettings(), callback).overlap_weights is False
    assert llm_init_config(ray_config, LLMInitSettings(overlap_weights=True),
                           callback).overlap_weights is True


def test_each_ray_hook_is_recorded_under_its_ray_name():
    """HookStarted and HookCompleted carry the Ray hook each call ran."""
    ray_config, callback = ray_setup()
    events = initialize(ray_config, callback)
    recorded = [(type(e).__name__, e.hook, e.ray_hook) for e in events
                if isinstance(e, HookStarted | HookCompleted) and e.callback == ADAPTER]
    assert recorded == [
        ("HookStarted", "on_pre_initialization", "on_before_node_init"),
        ("HookCompleted", "on_pre_initialization", "on_before_node_init"),
        ("HookStarted", "on_pre_download", "on_before_download_model_files_distributed"),
        ("HookCompleted", "on_pre_download", "on_before_download_model_files_distributed"),
        ("HookStarted", "on_post_download", "on_after_node_init"),
        ("HookCompleted", "on_post_download", "on_after_node_init")]


RAY_CTX = {"worker_node_download_model": NodeModelDownloadable.MODEL_AND_TOKENIZER}


class OneHookRayCallback(CallbackBase):
    """Overrides one Ray hook; the other two are Ray's no-ops."""

    async def on_before_node_init(self) -> None:
        self.ctx.custom_data["seen"] = True


def test_only_the_ray_hooks_a_class_overrides_are_called_and_recorded():
    """A class overriding one hook shows one call, not Ray's empty defaults too."""
    ray_config = RayLLMConfig(model_loading_config={"model_id": "m", "model_source": "hub/m"})
    callback = OneHookRayCallback(llm_config=ray_config, ctx_kwargs=RAY_CTX)
    events = initialize(ray_config, callback)
    name = f"llm_init.serve.ray_callbacks.RayCallback[{__name__}.OneHookRayCallback]"
    assert [(e.hook, e.ray_hook) for e in events
            if isinstance(e, HookCompleted) and e.callback == name] == [
        ("on_pre_initialization", "on_before_node_init")]


def test_run_init_node_false_skips_without_a_ray_hook_to_override():
    """run_init_node=False skips the download even when no hook is overridden; the skipping
    call names no Ray hook (none ran)."""
    ray_config = RayLLMConfig(model_loading_config={"model_id": "m", "model_source": "hub/m"})
    callback = OneHookRayCallback(llm_config=ray_config,
                                  ctx_kwargs={**RAY_CTX, "run_init_node": False})
    events = initialize(ray_config, callback)
    (skip,) = [e for e in events if isinstance(e, HookCompleted) and e.hook == "on_pre_download"]
    assert (skip.skipped_default, skip.ray_hook) == (True, None)
    assert [e.phase for e in events if isinstance(e, PhaseSkipped)] == ["download"]


def test_hook_spans_carry_the_ray_hook_name():
    """Each adapted call's span has llm_init.ray_hook, and a failed one says so."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    from llm_init.telemetry import names

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ray_config, callback = ray_setup("raise", raise_error=False)
    config = llm_init_config(ray_config, LLMInitSettings(), callback)
    asyncio.run(initialize_node(config, event_store=InMemoryEventStore(), steps=setting_steps(),
                                tracer_provider=provider))
    hooks = {s.attributes[names.ATTR_RAY_HOOK]: s for s in exporter.get_finished_spans()
             if s.attributes and names.ATTR_RAY_HOOK in s.attributes}
    assert sorted(hooks) == ["on_after_node_init", "on_before_download_model_files_distributed",
                             "on_before_node_init"]
    assert hooks["on_before_node_init"].status.status_code is StatusCode.ERROR
    assert hooks["on_after_node_init"].status.status_code is not StatusCode.ERROR


def test_a_download_mode_without_equivalent_is_an_error():
    """EXCLUDE_SAFETENSORS cannot be carried over silently."""
    ray_config, callback = ray_setup("exclude_safetensors")
    with pytest.raises(CallbackError, match="EXCLUDE_SAFETENSORS has no llm-init equivalent"):
        initialize(ray_config, callback)


def test_ray_default_callback_gets_no_adapter():
    """Ray's own no-op CallbackBase adds nothing to llm-init's callbacks."""
    ray_config, _ = ray_setup()
    base = CallbackBase(llm_config=ray_config)
    assert llm_init_config(ray_config, LLMInitSettings(), base).callback_classes == ()


def test_hooks_do_not_run_again_inside_rays_start():
    """While Ray's start() runs, its get_or_create_callback() gives a stand-in with the user's
    context whose hooks do nothing; the user's callback is back after."""
    ray_config, callback = ray_setup()
    ray_config._callback_instance = callback
    with hooks_already_ran(ray_config, callback):
        stand_in = ray_config.get_or_create_callback()
        assert stand_in is not callback
        assert stand_in.ctx is callback.ctx
        asyncio.run(stand_in.run_callback("on_before_node_init"))
        stand_in.run_callback_sync("on_before_download_model_files_distributed")
    assert callback.calls == []
    assert ray_config.get_or_create_callback() is callback


def test_settings_errors_are_serve_config_errors():
    with pytest.raises(ServeConfigError):
        LLMInitSettings.from_mapping({"nope": 1})


def test_the_replicas_placement_group_is_set_before_any_hook():
    """In a replica, ReplicaPlacementGroup runs first: the Ray callback already sees it."""
    from llm_init.serve.configs import ReplicaPlacementGroup

    ray_config, callback = ray_setup()
    group = object()
    config = llm_init_config(ray_config, LLMInitSettings(), callback,
                             replica_placement_group=group)
    assert config.callback_classes[0] is ReplicaPlacementGroup
    seen = []

    class Looks:
        def on_pre_initialization(self, ctx):
            seen.append(ctx.placement_group)

    store = InMemoryEventStore()
    steps = setting_steps()
    config = llm_init_config(ray_config, LLMInitSettings(callback_class=Looks), callback,
                             replica_placement_group=group)
    ctx = asyncio.run(initialize_node(config, event_store=store, steps=steps))
    assert seen == [group]
    assert ctx.placement_group == {"bundles": [{"CPU": 1}]}  # the (test) step's own


def test_the_hook_metric_counts_a_passed_over_ray_failure_as_failed():
    """llm_init_hook_duration_seconds has outcome="failed" for the failed Ray hook and
    "completed" for the others."""
    from prometheus_client import CollectorRegistry

    from llm_init.telemetry import names
    from llm_init.telemetry.backends import PrometheusBackend
    from llm_init.telemetry.metrics import MetricsCallback

    registry = CollectorRegistry()
    ray_config, callback = ray_setup("raise", raise_error=False)
    config = llm_init_config(ray_config, LLMInitSettings(), callback)
    asyncio.run(initialize_node(config, event_store=InMemoryEventStore(), steps=setting_steps(),
                                observers=[MetricsCallback(PrometheusBackend(registry,
                                                                             port=None))]))
    counts = {(s.labels["hook"], s.labels["outcome"]): s.value
              for m in registry.collect() if m.name == names.METRIC_HOOK_DURATION
              for s in m.samples if s.name.endswith("_count") and s.labels["callback"] == ADAPTER}
    assert counts == {("on_pre_initialization", "failed"): 1.0,
                      ("on_pre_download", "completed"): 1.0,
                      ("on_post_download", "completed"): 1.0}
