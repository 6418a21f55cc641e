"""Listing, inspecting and pruning artifact stores: real directories and moto's S3 server, real
archives published with ``publish``, and the ``llm-init warm`` commands through Typer."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm_init.artifacts import (
    ArtifactStore,
    BuildError,
    CatalogError,
    DirectoryArtifactStore,
    Manifest,
    build,
    inspect_artifact,
    list_artifacts,
    open_artifact_store,
    prune,
    publish,
    restore,
)
from llm_init.artifacts.catalog import DEFAULT_GRACE_S, parse_age, printable, tombstone_name
from llm_init.artifacts.transfer import index_name, manifest_name
from llm_init.cli import app
from llm_init.config import LLMConfig
from tests.support.s3 import running_moto_s3
from tests.support.warm import make_cache

runner = CliRunner()
DAY = 86400.0
LLAMA = {"model.source": "s3://models/llama", "model.revision": "", "model.weights": "w1",
         "vllm": "0.32.0", "torch": "2.13.0"}
QWEN = {**LLAMA, "model.source": "s3://models/qwen", "model.weights": "w2"}
OLD_VLLM = {**LLAMA, "vllm": "0.30.1"}


@pytest.fixture(params=["dir", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "dir":
        yield open_artifact_store(f"file://{tmp_path / 'store'}")
        return
    bucket = f"catalog-{uuid.uuid4().hex[:12]}"
    with running_moto_s3() as s3:
        s3.client().create_bucket(Bucket=bucket)
        yield open_artifact_store(f"s3://{bucket}/warm", endpoint_url=s3.endpoint_url)


def put(store: ArtifactStore, tmp_path: Path, key: str, parts: dict[str, str],
        age_s: float = 0.0) -> Manifest:
    """Publish a real cache as ``key``, its manifest dated ``age_s`` ago."""
    outcome = publish(store, key, parts, make_cache(tmp_path / f"cache-{key}"))
    assert outcome.result == "published", outcome
    manifest = Manifest.from_json(store.read(manifest_name(key)) or b"")
    if age_s:
        manifest = dataclasses.replace(manifest, created_at=time.time() - age_s)
        store.delete(manifest_name(key))
        assert store.put_new(manifest_name(key), manifest.to_json())
    return manifest


def names(store: ArtifactStore, key: str) -> list[str]:
    return store.list(f"{key}/")


def test_list_shows_every_artifact_newest_first(store: ArtifactStore, tmp_path: Path) -> None:
    """Each published artifact is listed once with its model, vLLM version and sizes, the
    newest first; index entries and tombstones are not artifacts."""
    put(store, tmp_path, "a" * 24, LLAMA, age_s=3 * DAY)
    put(store, tmp_path, "b" * 24, QWEN)
    found = list_artifacts(store)
    assert [(e.key, e.model, e.vllm) for e in found] == [
        ("b" * 24, "s3://models/qwen", "0.32.0"), ("a" * 24, "s3://models/llama", "0.32.0")]
    assert all(e.archive_bytes > 0 and e.files == 2 for e in found)


def test_list_filters_by_model_vllm_and_age(store: ArtifactStore, tmp_path: Path) -> None:
    """--model, --vllm and --older-than each narrow the listing, and they combine."""
    put(store, tmp_path, "a" * 24, LLAMA, age_s=10 * DAY)
    put(store, tmp_path, "b" * 24, QWEN, age_s=10 * DAY)
    put(store, tmp_path, "c" * 24, OLD_VLLM)
    assert {e.key for e in list_artifacts(store, model="s3://models/llama")} == {
        "a" * 24, "c" * 24}
    assert {e.key for e in list_artifacts(store, vllm="0.30.1")} == {"c" * 24}
    assert {e.key for e in list_artifacts(store, older_than_s=7 * DAY)} == {"a" * 24, "b" * 24}
    assert [e.key for e in list_artifacts(store, model="s3://models/llama",
                                          older_than_s=7 * DAY)] == ["a" * 24]


def test_an_unreadable_manifest_is_listed_with_why(store: ArtifactStore,
                                                   tmp_path: Path) -> None:
    """A manifest that is not JSON is listed with the reason, not fatal to the listing."""
    put(store, tmp_path, "a" * 24, LLAMA)
    assert store.put_new(manifest_name("d" * 24), b"\x00not json")
    found = {e.key: e for e in list_artifacts(store)}
    assert found["a" * 24].error is None
    assert "unreadable manifest" in (found["d" * 24].error or "")


def test_inspect_prints_the_manifest_without_control_characters(tmp_path: Path) -> None:
    """`warm inspect` shows the parts, archive, files, creation time and host, with escape
    sequences, bidi overrides and NULs from the store stripped before printing."""
    store = DirectoryArtifactStore(tmp_path / "store")
    manifest = put(store, tmp_path, "a" * 24, LLAMA)
    evil = dataclasses.replace(manifest, host="node\x1b[2J\x1b]0;pwned\x07-1\u202e\x00",
                               parts={**LLAMA, "model.source": "s3://m/\x1b[31mred"})
    store.delete(manifest_name("a" * 24))
    store.put_new(manifest_name("a" * 24), evil.to_json())
    result = runner.invoke(app, ["warm", "inspect", "a" * 24, "--artifact-store",
                                 f"file://{tmp_path / 'store'}"])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    assert "\u202e" not in result.output
    assert "\x00" not in result.output
    assert "\x07" not in result.output
    assert "node[2J]0;pwned-1" in result.output
    assert "model.source = s3://m/[31mred" in result.output
    assert "torch_compile_cache/abc/rank_0_0/vllm_compile_cache.py" in result.output
    assert manifest.archive in result.output


def test_inspect_of_an_unknown_key_fails_naming_it(tmp_path: Path) -> None:
    """`warm inspect` of a key the store lacks exits 1 and names the key and the store."""
    result = runner.invoke(app, ["warm", "inspect", "e" * 24, "--artifact-store",
                                 f"file://{tmp_path / 'store'}"])
    assert result.exit_code == 1
    assert f"no artifact {'e' * 24!r} in file://{tmp_path / 'store'}" in result.output
    with pytest.raises(CatalogError, match="is not an artifact key"):
        inspect_artifact(DirectoryArtifactStore(tmp_path), "../etc")


def test_prune_retires_the_manifest_so_no_new_restore_starts(store: ArtifactStore,
                                                             tmp_path: Path) -> None:
    """A pruned artifact no longer restores (a miss, no_match) and no longer lists, while its
    archive stays in the store for the grace period, named by a tombstone."""
    manifest = put(store, tmp_path, "a" * 24, LLAMA)
    report = prune(store, model="s3://models/llama")
    assert [e.key for e in report.pruned] == ["a" * 24]
    assert restore(store, "a" * 24, LLAMA, tmp_path / "r").reason == "no_match"
    assert list_artifacts(store) == []
    assert names(store, "a" * 24) == [f"{'a' * 24}/{manifest.archive}"]
    assert store.read(tombstone_name("a" * 24)) is not None
    assert store.read(index_name(LLAMA, "a" * 24)) is None
    assert report.waiting == ("a" * 24,)


def test_a_restore_under_way_when_prune_runs_still_completes(tmp_path: Path) -> None:
    """A restore that read the manifest before the prune fetches the archive after it and
    hits: prune never deletes an archive a restore may still be reading."""
    fetching, pruned = threading.Event(), threading.Event()

    class SlowStore(DirectoryArtifactStore):
        def get(self, name: str, dest: Path, *, max_bytes: int | None = None) -> bool:
            fetching.set()
            assert pruned.wait(30)
            return super().get(name, dest, max_bytes=max_bytes)

    put(DirectoryArtifactStore(tmp_path / "store"), tmp_path, "a" * 24, LLAMA)
    results = []
    reader = threading.Thread(target=lambda: results.append(
        restore(SlowStore(tmp_path / "store"), "a" * 24, LLAMA, tmp_path / "restored")))
    reader.start()
    assert fetching.wait(30)
    prune(DirectoryArtifactStore(tmp_path / "store"), model="s3://models/llama")
    pruned.set()
    reader.join(30)
    assert results[0].result == "hit", results[0]
    assert (tmp_path / "restored" / "modelinfos" / "llama.json").exists()


def test_a_later_prune_deletes_the_archive_once_the_grace_period_is_over(
        store: ArtifactStore, tmp_path: Path) -> None:
    """A prune after the grace period deletes the retired archive and its tombstone; one
    before it deletes nothing."""
    put(store, tmp_path, "a" * 24, LLAMA)
    put(store, tmp_path, "b" * 24, QWEN)
    prune(store, model="s3://models/llama")
    early = prune(store, vllm="9.9", now=time.time() + DEFAULT_GRACE_S / 2)
    assert early.deleted == ()
    late = prune(store, vllm="9.9", now=time.time() + DEFAULT_GRACE_S + 1)
    assert len(late.deleted) == 1
    assert late.deleted[0].startswith("a" * 24 + "/data-")
    assert names(store, "a" * 24) == []
    assert store.read(tombstone_name("a" * 24)) is None
    assert [e.key for e in list_artifacts(store)] == ["b" * 24]


def test_an_artifact_published_again_after_its_prune_is_kept(store: ArtifactStore,
                                                             tmp_path: Path) -> None:
    """If a replica publishes the key again during the grace period, the later collection
    deletes only the old archive; the new artifact stays and restores."""
    old = put(store, tmp_path, "a" * 24, LLAMA)
    prune(store, model="s3://models/llama")
    new = put(store, tmp_path / "again", "a" * 24, LLAMA)
    report = prune(store, vllm="9.9", now=time.time() + DEFAULT_GRACE_S + 1)
    assert report.deleted == (f"{'a' * 24}/{old.archive}",)
    assert names(store, "a" * 24) == sorted([manifest_name("a" * 24),
                                             f"{'a' * 24}/{new.archive}"])
    assert restore(store, "a" * 24, LLAMA, tmp_path / "r").result == "hit"


def test_a_publish_under_way_during_collection_is_left_alone(store: ArtifactStore,
                                                             tmp_path: Path) -> None:
    """An archive uploaded after the prune (its manifest not yet written) is not among the
    tombstone's objects, so the collection does not delete it."""
    put(store, tmp_path, "a" * 24, LLAMA)
    prune(store, model="s3://models/llama")
    upload = tmp_path / "upload.tar"
    upload.write_bytes(b"a publish under way")
    store.put(f"{'a' * 24}/data-inflight.tar", upload)
    prune(store, vllm="9.9", now=time.time() + DEFAULT_GRACE_S + 1)
    assert names(store, "a" * 24) == [f"{'a' * 24}/data-inflight.tar"]


def test_a_dry_run_changes_nothing(store: ArtifactStore, tmp_path: Path) -> None:
    """prune --dry-run reports what it would retire and leaves the store as it was."""
    put(store, tmp_path, "a" * 24, LLAMA)
    before = store.list()
    report = prune(store, model="s3://models/llama", dry_run=True)
    assert [e.key for e in report.pruned] == ["a" * 24]
    assert store.list() == before


def test_warm_prune_without_a_filter_refuses(tmp_path: Path) -> None:
    """`warm prune` with no --model, --vllm, --older-than or --all exits 1 and deletes
    nothing."""
    store = DirectoryArtifactStore(tmp_path / "store")
    put(store, tmp_path, "a" * 24, LLAMA)
    result = runner.invoke(app, ["warm", "prune", "--artifact-store", str(tmp_path / "store")])
    assert result.exit_code == 1
    assert "--all" in result.output
    assert len(list_artifacts(store)) == 1


def test_warm_list_and_prune_through_the_cli(tmp_path: Path) -> None:
    """`warm list --json` lists by vLLM version; `warm prune --vllm` retires exactly those."""
    store = DirectoryArtifactStore(tmp_path / "store")
    put(store, tmp_path, "a" * 24, LLAMA)
    put(store, tmp_path, "c" * 24, OLD_VLLM)
    url = ["--artifact-store", f"file://{tmp_path / 'store'}"]
    listed = runner.invoke(app, ["warm", "list", "--vllm", "0.30.1", "--json", *url])
    assert listed.exit_code == 0, listed.output
    assert [e["key"] for e in json.loads(listed.output)] == ["c" * 24]
    pruned = runner.invoke(app, ["warm", "prune", "--vllm", "0.30.1", *url])
    assert pruned.exit_code == 0, pruned.output
    assert f"retired {'c' * 24}" in pruned.output
    assert [e.key for e in list_artifacts(store)] == ["a" * 24]


def test_ages_read_as_people_write_them() -> None:
    """90s, 15m, 12h, 7d and 2w are seconds, minutes, hours, days and weeks; junk is an error
    naming the value."""
    assert [parse_age(t) for t in ("90s", "15m", "12h", "7d", "2w", "30")] == [
        90, 900, 43200, 604800, 1209600, 30]
    with pytest.raises(CatalogError, match="'7 days'"):
        parse_age("7 days")


def test_printable_strips_control_and_format_characters() -> None:
    """Terminal escapes, bidi overrides and NULs are removed; long text is cut."""
    assert printable("a\x1b[0m\u202eb\x00\nc") == "a[0mbc"
    assert printable("x" * 300, 10) == "xxxxxxx..."


def test_build_without_an_artifact_store_fails_naming_the_model() -> None:
    """A warm build of a config with no artifact_store raises BuildError naming the model."""
    with pytest.raises(BuildError, match="my-model has no artifact_store"):
        build(LLMConfig(model_id="my-model"))
