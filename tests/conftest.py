"""Shared fixtures: default steps that do real (small) work without Ray or vLLM."""

from __future__ import annotations

import os
import sys

import pytest

from llm_init import DefaultSteps, InMemoryEventStore
from tests.support.steps import FailingStep, SettingStep

__all__ = ["FailingStep", "SettingStep", "local_steps"]

pytest_plugins = ("tests.support.postgres",)


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


# After the whole suite has run in one process (Ray clusters, vLLM engines in process, torch),
# the interpreter's own teardown can die of SIGSEGV in native code with no Python frame left,
# which turns a finished, passing run into exit status 139. The result is settled by then, so
# the run leaves with pytest's exit status instead of finalizing those libraries. Set
# LLM_INIT_TEST_FINALIZE=1 to finalize normally (to look for that crash).
_exit_status: list[int] = []


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    if _exit_status and os.environ.get("LLM_INIT_TEST_FINALIZE") != "1":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])
