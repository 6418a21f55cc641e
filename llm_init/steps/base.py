"""The default-step interface and the placeholder used when no real step is configured."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from llm_init.errors import StepNotConfiguredError

if TYPE_CHECKING:
    from llm_init.context import NodeInitializationContext


class ProgressReporter(Protocol):
    """How a running step reports progress; each report becomes a ``StepProgressed`` event."""

    def __call__(self, **details: Any) -> None: ...


class DefaultStep(Protocol):
    """One phase's default work (download, placement group, engine). It reads and sets context
    fields; the runtime records what it changed. Blocking work belongs in a thread."""

    async def run(self, ctx: NodeInitializationContext, report: ProgressReporter) -> None: ...


@dataclass(frozen=True, slots=True)
class NotConfiguredStep:
    """Stands in for a real step and fails, saying how to provide one or skip it."""

    step: str
    hook: str

    async def run(self, ctx: NodeInitializationContext, report: ProgressReporter) -> None:
        raise StepNotConfiguredError(
            f"no {self.step} step is configured: pass steps=llm_init.steps.ray_vllm_steps() "
            f"(needs Ray and vLLM), a DefaultSteps of your own, or return False from "
            f"{self.hook} to skip it"
        )


@dataclass(frozen=True, slots=True)
class DefaultSteps:
    """The three default steps an initialization runs unless a pre-hook skips them."""

    download: DefaultStep = field(default=NotConfiguredStep("download", "on_pre_download"))
    placement_group: DefaultStep = field(
        default=NotConfiguredStep("placement_group", "on_pre_placement_group"))
    engine: DefaultStep = field(default=NotConfiguredStep("engine", "on_pre_engine_init"))

    def for_name(self, name: str) -> DefaultStep:
        step: DefaultStep = getattr(self, name)
        return step
