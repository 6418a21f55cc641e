"""The warm start's per-node fan-out on a real two-node Ray cluster (a head and one worker node
on this machine): the worker node restores in a task pinned to it, and every node's outcome is
an event naming that node. Artifacts are signed, and each node verifies the signature."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llm_init import DefaultSteps, InMemoryEventStore, LLMConfig, initialize_node_sync
from llm_init.artifacts.publishing import start_publish
from llm_init.artifacts.signing import load_private_key
from llm_init.events import ArtifactMissed, ArtifactRestored, Event
from llm_init.replay import read_events
from llm_init.steps.download import DownloadStep
from tests.support.models import write_model
from tests.support.steps import SettingStep
from tests.support.warm import CachingEngineStep, write_key_pair

pytestmark = pytest.mark.ray


def start(tmp_path: Path, run: str, signing: dict[str, object]
          ) -> tuple[list[Event], dict[str, str] | None]:
    source = tmp_path / "model"
    if not source.exists():
        write_model(source, shards=1, shard_size=20_000)
    (tmp_path / "store").mkdir(exist_ok=True)
    config = LLMConfig(model_id="tiny", model_source=str(source),
                       artifact_store={**signing, "url": f"file://{tmp_path / 'store'}",
                                       "cache_dir": str(tmp_path / run / "warm"),
                                       "model_link_dir": str(tmp_path / "links")})
    steps = DefaultSteps(download=DownloadStep(cache_dir=tmp_path / run / "models", nodes="all"),
                         placement_group=SettingStep("placement_group", None),
                         engine=CachingEngineStep())
    store = InMemoryEventStore()
    before = os.environ.get("VLLM_CACHE_ROOT")
    try:
        ctx = initialize_node_sync(config, event_store=store, steps=steps)
        thread = start_publish(ctx, event_store=store)
        if thread is not None:
            thread.join(60)
    finally:
        if before is None:
            os.environ.pop("VLLM_CACHE_ROOT", None)
        else:
            os.environ["VLLM_CACHE_ROOT"] = before
    env = (ctx.runtime_env or {}).get("env_vars")
    return read_events(store, ctx.init_id), env


def test_every_node_restores_and_says_so(two_ray_nodes: tuple[str, str], tmp_path: Path) -> None:
    """Cold: a miss on each node. Warm: a hit on each node, the worker's from a task pinned
    there, each having verified the signature; the workers' environment points vLLM at the
    restored cache."""
    head, worker = two_ray_nodes
    private, public = write_key_pair(tmp_path / "keys", "platform")
    signing = {"signing_key": str(private), "trusted_keys": [public.read_text()]}
    cold, _ = start(tmp_path, "cold", signing)
    warm, env = start(tmp_path, "warm", signing)
    assert {(e.node, e.reason) for e in cold if isinstance(e, ArtifactMissed)} == {
        (head, "no_match"), (worker, "no_match")}
    restored = {e.node: e for e in warm if isinstance(e, ArtifactRestored)}
    assert set(restored) == {head, worker}
    assert {e.signed_by for e in restored.values()} == {
        load_private_key(path=str(private)).key_id}
    assert env is not None
    assert env["VLLM_CACHE_ROOT"] == restored[head].path
