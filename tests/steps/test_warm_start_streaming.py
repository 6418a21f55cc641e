"""Warm starts under a streaming load format: the artifact key identifies the model by the
bucket's listing (sizes, checksums, ETags), no object read, the same key its downloaded copy
has; compiled artifacts restore while vLLM streams the weights."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_init.artifacts.transfer import HIT, NO_MATCH
from llm_init.events import ArtifactMissed, ArtifactPublished, ArtifactRestored
from llm_init.steps.warm_start import CONTEXT_KEY
from tests.support.models import write_model
from tests.support.s3 import MotoS3, running_moto_s3
from tests.support.warm import (
    CachingEngineStep,
    cache_root_env,  # noqa: F401  (autouse: restores VLLM_CACHE_ROOT)
    of_type,
)
from tests.support.warm import start_from as start


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[MotoS3]:
    with running_moto_s3() as server:
        yield server


@pytest.fixture
def bucket_model(moto_s3: MotoS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A one-shard model in the bucket, the S3 endpoint in the environment (where vLLM's
    streamer reads it too)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3.endpoint_url)
    write_model(tmp_path / "src", shards=1, shard_size=50_000)
    return moto_s3.upload_dir(tmp_path / "src", f"models/{tmp_path.name}")


def files_under(path: Path) -> list[str]:
    return sorted(p.name for p in path.rglob("*") if p.is_file()) if path.exists() else []


def test_a_streamed_start_restores_what_a_downloaded_start_published(
        tmp_path, bucket_model) -> None:
    """A start that downloaded the model publishes its compile cache; a start on another
    node that streams the same bucket model finds it under the same key, with no model file
    on its disk."""
    store = f"file://{tmp_path / 'store'}"
    _, first_events = start(tmp_path, "node-a", store, CachingEngineStep(),
                            source=bucket_model)
    second_engine = CachingEngineStep()
    second, events = start(tmp_path, "node-b", store, second_engine, source=bucket_model,
                           load_format="runai_streamer")
    (published,) = of_type(first_events, ArtifactPublished)
    (restored,) = of_type(events, ArtifactRestored)
    assert restored.key == published.key
    assert second.custom_data[CONTEXT_KEY]["result"] == HIT
    assert second_engine.seen[0]["warm"] is True
    assert files_under(tmp_path / "node-b" / "models") == []
    assert second.custom_data[CONTEXT_KEY]["model_path"] == bucket_model


def test_new_weights_in_the_bucket_are_a_new_key(tmp_path, moto_s3, bucket_model) -> None:
    """When a shard in the bucket is replaced (a new ETag), a streamed start misses the
    artifact of the old weights: the key follows the objects, not their names."""
    store = f"file://{tmp_path / 'store'}"
    _, before = start(tmp_path, "node-a", store, CachingEngineStep(), source=bucket_model,
                      load_format="runai_streamer")
    write_model(tmp_path / "other", shards=1, shard_size=50_000, seed=7)
    moto_s3.upload_dir(tmp_path / "other", bucket_model.removeprefix("s3://"))
    _, events = start(tmp_path, "node-b", store, CachingEngineStep(), source=bucket_model,
                      load_format="runai_streamer")
    (published,) = of_type(before, ArtifactPublished)
    (missed,) = of_type(events, ArtifactMissed)
    assert (missed.reason, missed.key != published.key) == (NO_MATCH, True)
    (first,) = of_type(before, ArtifactMissed)
    assert first.parts["model.weights"] != missed.parts["model.weights"]
    assert first.parts["model.source"] == missed.parts["model.source"]
