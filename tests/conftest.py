"""Shared fixtures: default steps that do real (small) work without Ray or vLLM."""

from __future__ import annotations

import pytest

from llm_init import DefaultSteps, InMemoryEventStore
from tests.support.steps import setting_steps

pytest_plugins = ("tests.support.postgres", "tests.support.ray_nodes", "tests.support.clean_exit")


@pytest.fixture
def steps() -> DefaultSteps:
    return setting_steps()


@pytest.fixture
def store() -> InMemoryEventStore:
    return InMemoryEventStore()
