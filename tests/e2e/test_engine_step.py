"""The vLLM engine step in this process, without Serve: a real ``AsyncLLM`` on the CPU, its
start-up sub-phases as events, and failures that carry vLLM's own message."""

from __future__ import annotations

import asyncio
import gc
import pathlib
import shutil
from typing import Any

import pytest

from llm_init import (
    InMemoryEventStore,
    LLMConfig,
    NodeInitializationContext,
    StepError,
    initialize_node,
    read_events,
)
from llm_init.events import PhaseFailed, StepFailed, StepProgressed
from llm_init.steps import ray_vllm_steps
from tests.e2e.support import FAST_ENV, FAST_KWARGS, LocalDirectoryDownload

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]



@pytest.fixture(autouse=True)
def fast_start(monkeypatch):
    for name, value in FAST_ENV.items():
        monkeypatch.setenv(name, value)


class NoPlacementGroup:
    """Runs the engine without a placement group (no Ray here); sets engine arguments."""

    def __init__(self, extra: dict[str, Any] | None = None) -> None:
        self.extra = extra or {}

    def on_pre_placement_group(self, ctx: NodeInitializationContext) -> bool:
        return False

    def on_pre_engine_init(self, ctx: NodeInitializationContext) -> None:
        ctx.extra_init_kwargs.update(self.extra)


def start(model_dir: pathlib.Path, store: InMemoryEventStore, **extra: Any
          ) -> NodeInitializationContext:
    config = LLMConfig(model_id="tiny", engine_kwargs=FAST_KWARGS,
                       callback_class=NoPlacementGroup, callback_kwargs={"extra": extra})
    steps = ray_vllm_steps(download=LocalDirectoryDownload(str(model_dir)))
    return asyncio.run(initialize_node(config, event_store=store, steps=steps))


def progress(store: InMemoryEventStore) -> list[dict[str, Any]]:
    (init_id,) = store.list_init_ids()
    return [e.details for e in read_events(store, init_id) if isinstance(e, StepProgressed)
            and e.step == "engine"]


def failure(store: InMemoryEventStore) -> tuple[StepFailed, PhaseFailed]:
    (init_id,) = store.list_init_ids()
    events = read_events(store, init_id)
    (step,) = [e for e in events if isinstance(e, StepFailed)]
    (phase,) = [e for e in events if isinstance(e, PhaseFailed)]
    return step, phase


def test_engine_starts_from_the_download_with_merged_kwargs_and_reports_subphases(tiny_model):
    """The engine loads the downloaded directory with the callback's arguments over the
    config's, reports each start-up sub-phase once, and generates."""
    from vllm import SamplingParams

    store = InMemoryEventStore()
    ctx = start(tiny_model, store, max_num_seqs=2)
    engine = ctx.engine
    try:
        async def generate() -> Any:
            async for out in engine.generate("Hello", SamplingParams(max_tokens=4),
                                             request_id="1"):
                last = out
            return last

        assert len(asyncio.run(generate()).outputs[0].token_ids) > 0
        assert engine.vllm_config.scheduler_config.max_num_seqs == 2
    finally:
        engine.shutdown()
        ctx.engine = engine = None  # no second shutdown from __del__ at interpreter exit
        gc.collect()
    details = progress(store)
    assert details[0] == {"engine_kwargs": {**FAST_KWARGS, "max_num_seqs": 2,
                                            "tensor_parallel_size": 1,
                                            "pipeline_parallel_size": 1},
                          "model": str(tiny_model)}
    names = [d["subphase"] for d in details[1:]]
    assert len(names) == len(set(names))
    assert {"engine_config", "engine_process_start", "model_init", "weight_loading",
            "init_engine", "kv_cache_profiling", "kv_cache_allocation_and_warmup",
            "engine_core_start"} == set(names)


def test_missing_weights_fail_the_engine_phase_with_vllms_message(tiny_model, tmp_path):
    """A model directory without its weights: the engine phase fails, recorded, and the
    message is vLLM's root cause from its EngineCore process, not just "see above"."""
    broken = shutil.copytree(tiny_model, tmp_path / "no-weights")
    (broken / "model.safetensors").unlink()
    store = InMemoryEventStore()
    with pytest.raises(StepError, match="Cannot find any model weights") as raised:
        start(broken, store)
    step, phase = failure(store)
    assert step.step == "engine"
    assert phase.phase == "engine_init"
    assert "Cannot find any model weights" in step.message
    assert phase.message == str(raised.value)


def test_bad_engine_kwargs_fail_the_engine_phase_with_vllms_message(tiny_model):
    """A callback's engine argument that vLLM rejects fails the engine phase with vLLM's
    reason, before any process is spawned."""
    store = InMemoryEventStore()
    with pytest.raises(StepError, match="max_model_len"):
        start(tiny_model, store, max_model_len=100_000)
    step, phase = failure(store)
    assert "100000" in step.message
    assert phase.phase == "engine_init"
    assert progress(store)[0]["engine_kwargs"]["max_model_len"] == 100_000
