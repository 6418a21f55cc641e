"""Small default steps that do real work without Ray or vLLM, for telemetry tests.

Pass them as ``initialize_node(config, steps=local_steps())``; the download and engine steps
report progress with the detail keys the metrics callback reads (``telemetry.names``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from llm_init import DefaultSteps, NodeInitializationContext
from llm_init.telemetry import names


@dataclass
class SettingStep:
    """Sets one context field, as the real steps do, and counts its runs."""

    field: str
    value: Any
    calls: int = 0

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        self.calls += 1
        setattr(ctx, self.field, self.value)


@dataclass
class DownloadStep:
    """Reports each chunk as a ``bytes_delta`` increment, then sets ``download_result``."""

    chunks: Sequence[int] = (1000, 2000, 3000)

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        for size in self.chunks:
            report(**{names.DETAIL_BYTES_DELTA: size})
        ctx.download_result = {"path": "/models/tiny", "bytes": sum(self.chunks)}


@dataclass
class EngineStep:
    """Reports engine sub-phases (name, seconds) as the vLLM engine step will, then sets
    ``engine``."""

    subphases: Sequence[tuple[str, float]] = ()

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        for subphase, seconds in self.subphases:
            report(**{names.DETAIL_SUBPHASE: subphase, names.DETAIL_DURATION_S: seconds})
        ctx.engine = "engine-handle"


@dataclass
class FailingStep:
    """Fails the way a broken download or engine would."""

    message: str

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        raise RuntimeError(self.message)


@dataclass
class CallingStep:
    """Runs ``action(ctx)`` (sync or async), for tests that look around mid-initialization."""

    action: Callable[[NodeInitializationContext], Any]
    calls: list[Any] = field(default_factory=list)

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        result = self.action(ctx)
        if asyncio.iscoroutine(result):
            result = await result
        self.calls.append(result)


def local_steps(**overrides: Any) -> DefaultSteps:
    """Download, placement group and engine steps that finish at once (override any)."""
    steps: dict[str, Any] = {
        "download": DownloadStep(),
        "placement_group": SettingStep("placement_group", {"bundles": [{"CPU": 1}]}),
        "engine": EngineStep(),
    }
    steps.update(overrides)
    return DefaultSteps(**steps)


def setting_steps() -> DefaultSteps:
    """Default steps that only set the context field each phase fills, with fixed values."""
    return DefaultSteps(
        download=SettingStep("download_result", {"path": "/models/tiny", "bytes": 1234}),
        placement_group=SettingStep("placement_group", {"bundles": [{"CPU": 1}]}),
        engine=SettingStep("engine", "engine-handle"),
    )
