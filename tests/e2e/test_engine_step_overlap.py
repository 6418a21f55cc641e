"""The overlapped start without Serve: ``initialize_node`` with llm-init's download and vLLM
engine steps, the engine (its EngineCore a process of its own) loading the weights as they
arrive, then generating."""

from __future__ import annotations

import asyncio
import gc
import pathlib
from typing import Any

import pytest

from llm_init import (
    InMemoryEventStore,
    LLMConfig,
    NodeInitializationContext,
    initialize_node,
    read_events,
)
from llm_init.events import DownloadOverlapped, StepProgressed
from llm_init.steps import ray_vllm_steps
from tests.e2e.support import FAST_ENV, FAST_KWARGS

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]



class NoPlacementGroup:
    """No Ray here: the engine runs without a placement group."""

    def on_pre_placement_group(self, ctx: NodeInitializationContext) -> bool:
        return False


def test_the_engine_step_loads_the_weights_as_they_arrive_and_generates(
        tiny_model: pathlib.Path, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM's engine starts while the weights are copied at 150 kB/s, loads them with
    ``llm_init_overlap`` once they are in place, and generates."""
    from vllm import SamplingParams

    for name, value in FAST_ENV.items():
        monkeypatch.setenv(name, value)
    store = InMemoryEventStore()
    config = LLMConfig(model_id="tiny", model_source=str(tiny_model), engine_kwargs=FAST_KWARGS,
                       callback_class=NoPlacementGroup, overlap_weights=True)
    steps = ray_vllm_steps(download_options={
        "copy_local_source": True, "cache_dir": str(tmp_path / "cache"),
        "max_bandwidth": 150_000})
    ctx = asyncio.run(initialize_node(config, event_store=store, steps=steps))
    engine = ctx.engine
    try:
        async def generate() -> Any:
            async for out in engine.generate("Hello", SamplingParams(max_tokens=4),
                                             request_id="1"):
                last = out
            return last

        assert len(asyncio.run(generate()).outputs[0].token_ids) > 0
    finally:
        engine.shutdown()
        ctx.engine = engine = None
        gc.collect()
    events = read_events(store, ctx.init_id)
    order = [f"{e.TYPE}:{getattr(e, 'step', '')}" for e in events
             if e.TYPE in ("StepStarted", "StepCompleted")]
    assert order.index("StepStarted:engine") < order.index("StepCompleted:download")
    (kwargs,) = [e.details["engine_kwargs"] for e in events
                 if isinstance(e, StepProgressed) and "engine_kwargs" in e.details]
    assert kwargs["load_format"] == "llm_init_overlap"  # type: ignore[index,call-overload]  # a JSON mapping
    (overlapped,) = [e for e in events if isinstance(e, DownloadOverlapped)]
    assert overlapped.overlapped_s > 1.0
