"""Shared fixtures: default steps that do real (small) work without Ray or vLLM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from llm_init import DefaultSteps, InMemoryEventStore, NodeInitializationContext

pytest_plugins = ("tests.support.postgres",)


@dataclass
class SettingStep:
    """A default step that sets one context field, as the real steps do."""

    field: str
    value: Any
    calls: int = 0

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        self.calls += 1
        setattr(ctx, self.field, self.value)


@dataclass
class FailingStep:
    """A default step that fails the way a broken download or engine would."""

    message: str

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        raise RuntimeError(self.message)


def local_steps() -> DefaultSteps:
    return DefaultSteps(
        download=SettingStep("download_result", {"path": "/models/tiny", "bytes": 1234}),
        placement_group=SettingStep("placement_group", {"bundles": [{"CPU": 1}]}),
        engine=SettingStep("engine", "engine-handle"),
    )


@pytest.fixture
def steps() -> DefaultSteps:
    return local_steps()


@pytest.fixture
def store() -> InMemoryEventStore:
    return InMemoryEventStore()
