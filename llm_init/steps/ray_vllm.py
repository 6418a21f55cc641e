"""``ray_vllm_steps()``: the real default steps for ``initialize_node`` outside Ray Serve.

``ray_vllm_steps()``: the real default steps (download, placement group, vLLM engine) in one
``DefaultSteps``, for ``initialize_node(..., steps=ray_vllm_steps())`` outside Ray Serve."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llm_init.steps.base import DefaultStep, DefaultSteps, ProgressReporter

if TYPE_CHECKING:
    from llm_init.context import NodeInitializationContext


@dataclass(frozen=True, slots=True)
class DefaultDownload:
    """The download step of ``llm_init.steps.download``, imported when it first runs, so a
    callback that skips the download (or a custom step) needs no download code at all."""

    options: Mapping[str, Any] = field(default_factory=dict)

    async def run(self, ctx: NodeInitializationContext, report: ProgressReporter) -> None:
        from llm_init.steps.download import download_step

        step: DefaultStep = download_step(**self.options)
        await step.run(ctx, report)


def ray_vllm_steps(*, download: DefaultStep | None = None,
                   placement_group: DefaultStep | None = None,
                   engine: DefaultStep | None = None,
                   download_options: Mapping[str, Any] | None = None) -> DefaultSteps:
    """Download (``llm_init.steps.download``, with ``download_options``), placement group
    (``PlacementGroupStep``) and engine (``VLLMEngineStep``); pass any of them to replace it."""
    from llm_init.steps.engine import VLLMEngineStep
    from llm_init.steps.placement import PlacementGroupStep

    return DefaultSteps(
        download=(download if download is not None
                  else DefaultDownload(dict(download_options or {}))),
        placement_group=placement_group if placement_group is not None else PlacementGroupStep(),
        engine=engine if engine is not None else VLLMEngineStep(),
    )
