"""Publishing and restoring artifacts through real directories and moto's S3 server."""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_init.artifacts import (
    ArtifactStore,
    ArtifactStoreError,
    DirectoryArtifactStore,
    Manifest,
    open_artifact_store,
    publish,
    restore,
)
from llm_init.artifacts.key import make_key
from llm_init.artifacts.transfer import manifest_name
from tests.support.s3 import running_moto_s3
from tests.support.warm import KEY, PARTS, make_cache


def publish_damaged(store: ArtifactStore, tmp_path: Path) -> None:
    """Publish ``KEY``, then replace its archive with as many bytes of garbage."""
    publish(store, KEY, PARTS, make_cache(tmp_path / "cold"))
    manifest = Manifest.from_json(store.read(manifest_name(KEY)) or b"")
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"x" * manifest.archive_bytes)
    store.put(f"{KEY}/{manifest.archive}", bad)


@pytest.fixture(params=["dir", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "dir":
        (tmp_path / "store").mkdir(exist_ok=True)
        yield open_artifact_store(f"file://{tmp_path / 'store'}")
        return
    # moto keeps its buckets per process, not per server: a bucket of this test's own.
    bucket = f"artifacts-{uuid.uuid4().hex[:12]}"
    with running_moto_s3() as s3:
        s3.client().create_bucket(Bucket=bucket)
        yield open_artifact_store(f"s3://{bucket}/warm", endpoint_url=s3.endpoint_url)


def test_restore_brings_back_every_published_file(store: ArtifactStore, tmp_path: Path) -> None:
    """A published cache comes back byte for byte in another directory."""
    source = make_cache(tmp_path / "cold")
    published = publish(store, KEY, PARTS, source)
    restored = restore(store, KEY, PARTS, tmp_path / "warm")
    assert (published.result, restored.result) == ("published", "hit")
    for path in source.rglob("*"):
        if path.is_file():
            twin = tmp_path / "warm" / path.relative_to(source)
            assert twin.read_bytes() == path.read_bytes()
    assert restored.files == 2
    assert restored.bytes == sum(
        p.stat().st_size for p in source.rglob("*") if p.is_file())


def test_an_absent_artifact_is_a_miss_without_match(store: ArtifactStore, tmp_path: Path) -> None:
    """Nothing published under the key: a miss whose reason is no_match."""
    outcome = restore(store, KEY, PARTS, tmp_path / "warm")
    assert (outcome.result, outcome.reason) == ("miss", "no_match")
    assert not (tmp_path / "warm").exists()


def test_a_corrupt_archive_is_a_miss_and_leaves_nothing(store: ArtifactStore,
                                                        tmp_path: Path) -> None:
    """An archive whose bytes changed after publishing is refused before anything is used."""
    publish_damaged(store, tmp_path)
    outcome = restore(store, KEY, PARTS, tmp_path / "warm")
    assert (outcome.result, outcome.reason) == ("miss", "corrupt")
    assert not (tmp_path / "warm").exists()


def test_an_archive_without_manifest_is_not_taken(store: ArtifactStore, tmp_path: Path) -> None:
    """A publisher that died before its manifest leaves nothing a reader takes."""
    archive = tmp_path / "orphan.tar"
    archive.write_bytes(b"partial")
    store.put(f"{KEY}/data-orphan.tar", archive)
    assert restore(store, KEY, PARTS, tmp_path / "warm").reason == "no_match"


def test_another_version_is_a_version_mismatch(store: ArtifactStore, tmp_path: Path) -> None:
    """An artifact recorded for another vLLM version under the same key is refused."""
    publish(store, KEY, PARTS, make_cache(tmp_path / "cold"))
    outcome = restore(store, KEY, {**PARTS, "vllm": "0.33.0"}, tmp_path / "warm")
    assert (outcome.result, outcome.reason) == ("miss", "version_mismatch")
    assert "vllm" in (outcome.message or "")


def test_an_artifact_of_this_model_from_another_vllm_is_a_version_mismatch_naming_it(
        store: ArtifactStore, tmp_path: Path) -> None:
    """After a vLLM upgrade the key changes; the miss names the old artifact and the version
    it was made with, not just "no match"."""
    model = {"model.source": "s3://models/tiny", "model.weights": "abc", "engine.dtype": "bf16"}
    old = make_key({**model, "vllm": "0.31.0", "torch": "2.12.0"})
    new = make_key({**model, "vllm": "0.32.0", "torch": "2.12.0"})
    publish(store, old.digest, old.parts, make_cache(tmp_path / "cold"))
    outcome = restore(store, new.digest, new.parts, tmp_path / "warm")
    assert (outcome.result, outcome.reason) == ("miss", "version_mismatch")
    assert outcome.nearest == old.digest
    assert dict(outcome.differs) == {"vllm": ("0.31.0", "0.32.0")}
    assert "vllm 0.31.0 (here 0.32.0)" in (outcome.message or "")


def test_a_miss_names_the_nearest_artifact_of_the_model_and_what_differs(
        store: ArtifactStore, tmp_path: Path) -> None:
    """Another engine configuration of the same model is no match, and the miss says which
    argument differs; an artifact of another model is not named."""
    model = {"model.source": "s3://models/tiny", "model.weights": "abc", "vllm": "0.32.0"}
    published = make_key({**model, "engine.max_model_len": "2048"})
    other_model = make_key({**model, "model.weights": "def", "engine.max_model_len": "1024"})
    wanted = make_key({**model, "engine.max_model_len": "1024"})
    publish(store, published.digest, published.parts, make_cache(tmp_path / "one"))
    publish(store, other_model.digest, other_model.parts, make_cache(tmp_path / "two"))
    outcome = restore(store, wanted.digest, wanted.parts, tmp_path / "warm")
    assert (outcome.reason, outcome.nearest) == ("no_match", published.digest)
    assert dict(outcome.differs) == {"engine.max_model_len": ("2048", "1024")}


def test_a_corrupt_artifact_is_set_aside_and_the_next_publish_replaces_it(
        store: ArtifactStore, tmp_path: Path) -> None:
    """A damaged artifact does not block warm starts forever: the reader that finds it
    removes it, its own publish then completes a sound one, and the next start hits."""
    publish_damaged(store, tmp_path)
    missed = restore(store, KEY, PARTS, tmp_path / "first")
    republished = publish(store, KEY, PARTS, make_cache(tmp_path / "again"))
    assert (missed.reason, republished.result) == ("corrupt", "published")
    assert "set aside" in (missed.message or "")
    assert restore(store, KEY, PARTS, tmp_path / "second").result == "hit"
    sound = Manifest.from_json(store.read(manifest_name(KEY)) or b"")
    assert store.list(KEY) == sorted([manifest_name(KEY), f"{KEY}/{sound.archive}"])


def test_a_file_that_differs_from_its_manifest_entry_is_refused(store: ArtifactStore,
                                                                tmp_path: Path) -> None:
    """A manifest whose archive digest matches but one of whose file digests does not (the
    bytes a signature vouches for are the files') is refused as corrupt, naming the file."""
    publish(store, KEY, PARTS, make_cache(tmp_path / "cold"))
    manifest = Manifest.from_json(store.read(manifest_name(KEY)) or b"")
    first, *rest = manifest.files
    changed = dataclasses.replace(
        manifest, files=(dataclasses.replace(first, sha256="0" * 64), *rest))
    store.delete(manifest_name(KEY))
    store.put_new(manifest_name(KEY), changed.to_json())
    outcome = restore(store, KEY, PARTS, tmp_path / "warm")
    assert (outcome.result, outcome.reason) == ("miss", "corrupt")
    assert first.path in (outcome.message or "")
    assert not (tmp_path / "warm").exists()


def test_a_newer_manifest_format_is_a_version_mismatch(store: ArtifactStore,
                                                       tmp_path: Path) -> None:
    """A manifest of a format this llm-init cannot read is a version mismatch."""
    store.put_new(manifest_name(KEY), b'{"format": 99}')
    assert restore(store, KEY, PARTS, tmp_path / "warm").reason == "version_mismatch"


def test_a_complete_artifact_is_never_overwritten(store: ArtifactStore, tmp_path: Path) -> None:
    """A second publish of the same key is skipped and the first manifest stays."""
    publish(store, KEY, PARTS, make_cache(tmp_path / "one"))
    first = store.read(manifest_name(KEY))
    again = publish(store, KEY, PARTS, make_cache(tmp_path / "two"))
    assert (again.result, again.reason) == ("skipped", "exists")
    assert store.read(manifest_name(KEY)) == first


def test_concurrent_publishers_leave_one_complete_artifact(store: ArtifactStore,
                                                           tmp_path: Path) -> None:
    """Four publishers of one key at once: one publishes, the others skip, and exactly one
    archive (the manifest's) remains."""
    sources = [make_cache(tmp_path / f"src{i}") for i in range(4)]
    barrier = threading.Barrier(len(sources))
    outcomes: list[str] = []

    def run(source: Path) -> None:
        barrier.wait()
        outcomes.append(publish(store, KEY, PARTS, source).result)

    threads = [threading.Thread(target=run, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["published", "skipped", "skipped", "skipped"]
    manifest = Manifest.from_json(store.read(manifest_name(KEY)) or b"")
    assert store.list(KEY) == sorted([manifest_name(KEY), f"{KEY}/{manifest.archive}"])
    assert restore(store, KEY, PARTS, tmp_path / "warm").result == "hit"


def test_a_cache_over_the_cap_is_skipped(store: ArtifactStore, tmp_path: Path) -> None:
    """Over ``max_bytes`` nothing is uploaded and the skip says why."""
    outcome = publish(store, KEY, PARTS, make_cache(tmp_path / "cold"), max_bytes=100)
    assert (outcome.result, outcome.reason) == ("skipped", "too_large")
    assert store.list() == []


def test_an_unreachable_store_is_a_miss(tmp_path: Path) -> None:
    """No server at the endpoint: a miss whose reason is unreachable, within seconds."""
    with running_moto_s3():  # fake credentials, no endpoint variables
        store = open_artifact_store("s3://artifacts/warm", endpoint_url="http://127.0.0.1:9")
        outcome = restore(store, KEY, PARTS, tmp_path / "warm")
    assert (outcome.result, outcome.reason) == ("miss", "unreachable")
    assert outcome.seconds < 30


def test_a_store_url_of_unknown_scheme_is_named_in_the_error() -> None:
    """An unsupported URL fails with a one-line error naming it, its credentials masked."""
    with pytest.raises(ArtifactStoreError, match=r"ftp://\*\*\*@host/x.*unsupported"):
        open_artifact_store("ftp://user:hunter2@host/x")


def test_a_directory_store_lists_by_prefix(tmp_path: Path) -> None:
    """Names list relative to the store's root, filtered by prefix."""
    store = DirectoryArtifactStore(tmp_path)
    store.put_new("a/one", b"1")
    store.put_new("b/two", b"2")
    assert store.list("a/") == ["a/one"]
    assert store.put_new("a/one", b"again") is False
    assert store.read("a/one") == b"1"
