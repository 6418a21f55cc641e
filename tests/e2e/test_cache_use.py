"""Did vLLM use what was restored? A real ``AsyncLLM`` on the CPU with compilation on
(``enforce_eager=False``), in this process, with a directory artifact store: a cold start that
publishes, a warm start on another "node" (its own compile cache) that vLLM uses, and a start
that restores the same artifact while the engine sees a hashed ``VLLM_*`` variable the key did
not (as if llm-init's key missed a factor), which vLLM ignores.

Three compile-on starts take several minutes on a 2-core machine, so they share one test.
"""

from __future__ import annotations

import asyncio
import gc
import os
import pathlib
from typing import Any

import pytest

from llm_init import InMemoryEventStore, LLMConfig, NodeInitializationContext, initialize_node
from llm_init.artifacts.publishing import start_publish
from llm_init.events import (
    ArtifactMissed,
    ArtifactPublished,
    ArtifactRestored,
    ArtifactUseObserved,
    Event,
)
from llm_init.replay import read_events
from llm_init.steps import ray_vllm_steps
from tests.e2e.support import LocalDirectoryDownload
from tests.e2e.test_engine_step import FAST_ENV

pytestmark = [pytest.mark.e2e, pytest.mark.vllm, pytest.mark.timeout(1800)]

COMPILE_KWARGS = {"dtype": "bfloat16", "enforce_eager": False, "max_model_len": 256,
                  "max_num_seqs": 4, "max_num_batched_tokens": 256}
HASHED = "VLLM_BUILD_URL"  # vLLM hashes it into its compile cache's name; harmless otherwise


class EngineSees:
    """Sets ``env`` just before the engine starts, after the key and the restore."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = env or {}

    def on_pre_placement_group(self, ctx: NodeInitializationContext) -> bool:
        return False

    def on_pre_engine_init(self, ctx: NodeInitializationContext) -> None:
        os.environ.update(self.env)


def start(model: pathlib.Path, tmp: pathlib.Path, node: str, **env: str) -> list[Event]:
    """One initialization on ``node`` (its own compile cache), published after it starts."""
    (tmp / "store").mkdir(exist_ok=True)  # the shared directory store, mounted on every node
    config = LLMConfig(model_id="tiny", engine_kwargs=COMPILE_KWARGS, callback_class=EngineSees,
                       callback_kwargs={"env": env},
                       artifact_store={"url": f"file://{tmp / 'store'}",
                                       "cache_dir": str(tmp / node / "warm")})
    store = InMemoryEventStore()
    steps = ray_vllm_steps(download=LocalDirectoryDownload(str(model)))
    ctx = asyncio.run(initialize_node(config, event_store=store, steps=steps))
    try:
        thread = start_publish(ctx, event_store=store)
        if thread is not None:
            thread.join(300)
    finally:
        ctx.engine.shutdown()
        ctx.engine = None
        gc.collect()
    return list(read_events(store, ctx.init_id))


def only(events: list[Event], kind: type[Event]) -> Any:
    (found,) = [e for e in events if isinstance(e, kind)]
    return found


@pytest.fixture(autouse=True)
def fast_start(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in FAST_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(HASHED, raising=False)


def test_vllm_uses_a_restored_cache_and_ignoring_one_is_recorded_unused(
        tiny_model: pathlib.Path, tmp_path: pathlib.Path) -> None:
    """Cold: a miss, vLLM compiles, publishes. Warm: a hit that vLLM uses (the CPU build's AOT
    artifact fails to load, with vLLM's reason). Ignored: a hit, but the engine sees another
    hashed variable, so vLLM looks elsewhere and compiles: recorded as unused."""
    cold = start(tiny_model, tmp_path, "node-a")
    assert only(cold, ArtifactMissed).reason == "no_match"
    assert only(cold, ArtifactPublished).bytes > 0
    cold_use = only(cold, ArtifactUseObserved)
    assert (cold_use.restored, cold_use.used, cold_use.compiled) == (False, False, True)

    warm = start(tiny_model, tmp_path, "node-b")
    only(warm, ArtifactRestored)
    warm_use = only(warm, ArtifactUseObserved)
    assert (warm_use.restored, warm_use.used) == (True, True)
    assert warm_use.aot == "failed"
    assert "finalize_loading" in (warm_use.aot_reason or "")

    try:
        ignored = start(tiny_model, tmp_path, "node-c", **{HASHED: "elsewhere"})
    finally:
        os.environ.pop(HASHED, None)  # the hook set it for this process
    only(ignored, ArtifactRestored)
    ignored_use = only(ignored, ArtifactUseObserved)
    assert (ignored_use.restored, ignored_use.used, ignored_use.aot) == (True, False, "absent")
    assert ignored_use.compiled
