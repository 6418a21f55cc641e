"""Shared fixtures: default steps that do real (small) work without Ray or vLLM."""

from __future__ import annotations

import pytest

from llm_init import DefaultSteps, InMemoryEventStore
from tests.support.steps import FailingStep, SettingStep

__all__ = ["FailingStep", "SettingStep", "local_steps"]

pytest_plugins = ("tests.support.postgres", "tests.support.ray_nodes", "tests.support.clean_exit")


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
