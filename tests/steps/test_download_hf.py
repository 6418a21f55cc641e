"""The download step with a Hugging Face repo id: a loopback Hub through HF_ENDPOINT, revision
pinning, and offline resolution (HF_HUB_OFFLINE) from the llm-init cache or the Hub's cache."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_init import LLMConfig, NodeInitializationContext
from llm_init.steps.download import DownloadResult, DownloadStep, OfflineCacheMissError
from tests.support.hub import FakeHub, populate_hub_cache
from tests.support.models import read_tree

REPO = "org/tiny"


def model_files(seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {"config.json": b'{"model_type": "llama", "seed": %d}' % seed,
            "tokenizer.json": rng.randbytes(3000),
            "tokenizer_config.json": b"{}",
            "model.safetensors": rng.randbytes(500_000)}


def run_step(step: DownloadStep, *, local: str = "MODEL_AND_TOKENIZER") -> DownloadResult:
    config = LLMConfig(model_id=REPO, local_node_download_model=local)
    ctx = NodeInitializationContext.for_config("init-hf", config)
    asyncio.run(step.run(ctx, lambda **details: None))
    result: DownloadResult = ctx.download_result
    return result


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A loopback Hub that HF_ENDPOINT points to, online."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


def test_repo_downloads_through_hf_endpoint(hub, tmp_path) -> None:
    """A repo id is fetched from the Hub HF_ENDPOINT names, pinned to the commit it listed, LFS
    files checked by SHA-256 and the others by git blob SHA-1."""
    files = model_files(1)
    commit = hub.add(REPO, files)
    result = run_step(DownloadStep(cache_dir=tmp_path))
    assert read_tree(Path(result.path or "")) == files
    assert (result.revision, result.source) == (commit, "hf://org/tiny@main")
    assert result.nodes[0].verified == {"git-blob-sha1": 3, "sha256": 1}
    assert Path(result.path or "").name == "hf--org--tiny@main"


def test_revision_is_pinned(hub, tmp_path) -> None:
    """``revision`` fetches that tag's files, not the branch head's, into a directory of its own."""
    old = model_files(1)
    hub.add(REPO, old, revisions=("v1",))
    hub.add(REPO, model_files(2))
    result = run_step(DownloadStep(cache_dir=tmp_path, revision="v1"))
    assert read_tree(Path(result.path or "")) == old
    assert Path(result.path or "").name == "hf--org--tiny@v1"


def test_offline_resolves_from_the_hub_cache(tmp_path, monkeypatch) -> None:
    """With HF_HUB_OFFLINE=1 and no server, a repo in the Hub's cache is used in place."""
    files = model_files(3)
    snapshot = populate_hub_cache(tmp_path / "hub", REPO, files, commit="a" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: no request
    result = run_step(DownloadStep(cache_dir=tmp_path / "cache"), local="TOKENIZER_ONLY")
    node = result.nodes[0]
    assert (result.path, node.resolved_from, node.revision) == (str(snapshot), "hub cache",
                                                                "a" * 40)
    assert (node.files, node.bytes_fetched) == (("config.json", "tokenizer.json",
                                                 "tokenizer_config.json"), 0)


def test_offline_after_a_download_uses_the_llm_init_cache(hub, tmp_path, monkeypatch) -> None:
    """A model downloaded online is found offline in the llm-init cache, with no request."""
    files = model_files(4)
    hub.add(REPO, files)
    step = DownloadStep(cache_dir=tmp_path)
    online = run_step(step)
    served = hub.bytes_served
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    offline = run_step(step)
    assert (offline.path, offline.nodes[0].resolved_from) == (online.path, "llm-init cache")
    assert (offline.bytes_fetched, hub.bytes_served) == (0, served)


def test_offline_without_any_cache_names_the_repo(tmp_path, monkeypatch) -> None:
    """Offline, a repo in neither cache fails with an error naming the repo and the caches."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    with pytest.raises(OfflineCacheMissError, match="hf://org/tiny@main"):
        run_step(DownloadStep(cache_dir=tmp_path / "cache"))
