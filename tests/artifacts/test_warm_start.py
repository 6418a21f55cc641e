"""Warm starts through ``initialize_node``: the real download step, the restore in its phase,
the publish after the start, the events, the hooks. The engine step stands in for vLLM by
writing a cache where vLLM would (``VLLM_CACHE_ROOT``); tests/e2e run the real vLLM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llm_init import DefaultSteps, InMemoryEventStore, LLMConfig, initialize_node_sync
from llm_init.context import NodeInitializationContext
from llm_init.errors import CallbackConfigError
from llm_init.events import (
    ArtifactMissed,
    ArtifactPublished,
    ArtifactPublishSkipped,
    ArtifactRestored,
    ContextChanged,
)
from llm_init.replay import read_events
from llm_init.steps.download import DownloadStep
from tests.support.models import write_model
from tests.support.steps import SettingStep
from tests.support.warm import (
    CachingEngineStep,
    cache_root_env,  # noqa: F401  (autouse: restores VLLM_CACHE_ROOT)
    of_type,
    start,
)


class ReadsWarmStart:
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def on_post_download(self, ctx: NodeInitializationContext) -> None:
        """Records what the warm start put on the context."""
        self.seen.append(ctx.custom_data.get("llm_init.warm_start"))


class SkipsDownload:
    def on_pre_download(self, ctx: NodeInitializationContext) -> bool:
        """Skips the download (and with it the restore)."""
        ctx.download_result = {"path": "/nowhere"}
        return False


class VetoesPublish:
    def on_post_engine_init(self, ctx: NodeInitializationContext) -> None:
        """Says no to publishing this replica's cache."""
        ctx.custom_data["llm_init.warm_start.publish"] = False


def test_a_second_node_starts_from_the_first_nodes_cache(tmp_path: Path) -> None:
    """Cold: a miss, then a publish after the start. Warm, on a node whose download lies
    elsewhere: a hit before the engine starts, the same model path and cache contents."""
    engine, store_url = CachingEngineStep(), f"file://{tmp_path / 'store'}"
    _, cold = start(tmp_path, "node-a", store_url, engine)
    _, warm = start(tmp_path, "node-b", store_url, engine)
    missed, = of_type(cold, ArtifactMissed)
    published, = of_type(cold, ArtifactPublished)
    restored, = of_type(warm, ArtifactRestored)
    assert missed.reason == "no_match"
    assert restored.key == missed.key == published.key
    assert restored.bytes == len("compiled\n")
    assert restored.parts["engine.max_model_len"] == "256"
    assert [s["warm"] for s in engine.seen] == [False, True]
    assert engine.seen[0]["model"] == engine.seen[1]["model"]  # one path on every node
    assert engine.seen[0]["root"] != engine.seen[1]["root"]
    assert not of_type(warm, ArtifactPublished)
    assert of_type(warm, ArtifactPublishSkipped)[0].reason == "exists"


def test_the_restore_is_recorded_in_the_download_phase(tmp_path: Path) -> None:
    """The restore's event comes between the download step's start and its end."""
    _, events = start(tmp_path, "node-a", f"file://{tmp_path / 'store'}", CachingEngineStep())
    types = [e.TYPE for e in events]
    assert types.index("StepStarted") < types.index("ArtifactMissed") < types.index(
        "StepCompleted")
    assert of_type(events, ArtifactMissed)[0].sequence < next(
        e.sequence for e in events
        if e.TYPE == "PhaseCompleted" and getattr(e, "phase", None) == "download")


def test_callbacks_read_the_warm_start_from_the_context(tmp_path: Path) -> None:
    """``on_post_download`` sees the key, the result and the cache directory."""
    ctx, events = start(tmp_path, "node-a", f"file://{tmp_path / 'store'}", CachingEngineStep(),
                        callbacks=[ReadsWarmStart], publish=False)
    reader = ctx.llm_config.get_or_create_callbacks()[0]
    assert isinstance(reader, ReadsWarmStart)
    (seen,) = reader.seen
    assert (seen["result"], seen["reason"]) == ("miss", "no_match")
    assert seen["cache_dir"].endswith(seen["artifact"])
    changed = [e for e in events if isinstance(e, ContextChanged)
               and e.key == "llm_init.warm_start"]
    assert changed[0].new == seen  # on record, as every context change


def test_a_pre_download_hook_returning_false_skips_the_restore(tmp_path: Path) -> None:
    """No download, no restore: no artifact event at all."""
    engine = CachingEngineStep()
    _, events = start(tmp_path, "node-a", f"file://{tmp_path / 'store'}", engine,
                      callbacks=[SkipsDownload])
    assert not [e for e in events if e.TYPE.startswith("Artifact")]


def test_a_callback_vetoes_publishing(tmp_path: Path) -> None:
    """``custom_data["llm_init.warm_start.publish"] = False``: nothing is published."""
    _, events = start(tmp_path, "node-a", f"file://{tmp_path / 'store'}", CachingEngineStep(),
                      callbacks=[VetoesPublish])
    assert of_type(events, ArtifactPublishSkipped)[0].reason == "vetoed"
    assert list((tmp_path / "store").iterdir()) == []


def test_a_corrupt_artifact_is_a_miss_and_the_start_succeeds(tmp_path: Path) -> None:
    """Archive bytes changed in the store: a miss with reason corrupt, the engine cold."""
    engine, store_url = CachingEngineStep(), f"file://{tmp_path / 'store'}"
    start(tmp_path, "node-a", store_url, engine)
    for archive in (tmp_path / "store").rglob("data-*.tar"):
        data = bytearray(archive.read_bytes())
        data[-2000] ^= 0xFF
        archive.write_bytes(bytes(data))
    ctx, warm = start(tmp_path, "node-b", store_url, engine, publish=False)
    assert of_type(warm, ArtifactMissed)[0].reason == "corrupt"
    assert ctx.engine == "engine"
    assert engine.seen[1]["warm"] is False


def test_secrets_in_the_store_url_are_masked_in_events(tmp_path: Path) -> None:
    """A password in the store URL appears in no event."""
    url = "s3://AKIAIOSFODNN7EXAMPLE:hunter2secret@warm/prefix"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", "x")
        patch.setenv("AWS_SECRET_ACCESS_KEY", "x")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        config_url = {"url": url, "endpoint_url": "http://127.0.0.1:9", "timeout_s": 20}
        source = tmp_path / "model"
        write_model(source, shards=1, shard_size=10_000)
        config = LLMConfig(model_id="tiny", model_source=str(source),
                           artifact_store={**config_url, "cache_dir": str(tmp_path / "warm"),
                                           "model_link_dir": None})
        steps = DefaultSteps(download=DownloadStep(cache_dir=tmp_path / "models"),
                             placement_group=SettingStep("placement_group", None),
                             engine=CachingEngineStep())
        store = InMemoryEventStore()
        ctx = initialize_node_sync(config, event_store=store, steps=steps)
    text = repr(list(read_events(store, ctx.init_id)))
    assert "hunter2secret" not in text
    assert of_type(list(read_events(store, ctx.init_id)), ArtifactMissed)[0].reason in (
        "unreachable", "timeout")


def test_bad_artifact_settings_name_the_key() -> None:
    """A misspelt setting fails at configuration time with a suggestion."""
    with pytest.raises(CallbackConfigError, match=r"'max_byte'.*'max_bytes'"):
        LLMConfig(model_id="tiny", artifact_store={"url": "file:///x", "max_byte": 1})
