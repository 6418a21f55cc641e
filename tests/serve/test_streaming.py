"""A Ray Serve LLM config with a streaming load format under llm-init, without Serve: Ray's
callback sees what it sees in Ray (no download, the engine pointed at the bucket)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ray.llm._internal.common.callbacks.base import CallbackBase
from ray.llm._internal.common.utils.download_utils import NodeModelDownloadable
from ray.serve.llm import LLMConfig as RayLLMConfig

from llm_init import InMemoryEventStore, initialize_node, read_events
from llm_init.events import WeightsRouteChosen
from llm_init.serve.configs import llm_init_config
from llm_init.serve.settings import LLMInitSettings
from llm_init.steps.base import DefaultSteps
from llm_init.steps.download import DownloadStep
from tests.support.steps import SettingStep

SOURCE = "s3://models/tiny"


class SeesTheEngineModel(CallbackBase):
    """Notes what Ray's engine config loads when the node initialization is done."""

    seen: str | None = None

    async def on_after_node_init(self) -> None:
        type(self).seen = self.llm_config.get_engine_config().actual_hf_model_id


def test_a_ray_callback_sees_the_engine_pointed_at_the_bucket(tmp_path: Path) -> None:
    """With Ray's NONE for worker nodes under runai_streamer, nothing is downloaded, the route
    is recorded as streamed, and Ray's on_after_node_init finds the engine config loading the
    bucket URI."""
    ray_config = RayLLMConfig(
        model_loading_config={"model_id": "tiny", "model_source": SOURCE},
        engine_kwargs={"load_format": "runai_streamer"},
        callback_config={"callback_class": SeesTheEngineModel})
    callback = SeesTheEngineModel(llm_config=ray_config, ctx_kwargs={
        "worker_node_download_model": NodeModelDownloadable.NONE})  # as Ray sets it
    config = llm_init_config(ray_config, LLMInitSettings(), callback)
    steps = DefaultSteps(download=DownloadStep(cache_dir=tmp_path),
                         placement_group=SettingStep("placement_group", None),
                         engine=SettingStep("engine", "engine"))
    store = InMemoryEventStore()
    ctx: Any = asyncio.run(initialize_node(config, event_store=store, steps=steps))
    (chosen,) = [e for e in read_events(store, ctx.init_id)
                 if isinstance(e, WeightsRouteChosen)]
    assert (chosen.route, set(chosen.modes.values())) == ("streamed", {"NONE"})
    assert SeesTheEngineModel.seen == SOURCE
    assert ctx.download_result.streamed_from == SOURCE
    assert list(tmp_path.iterdir()) == []
