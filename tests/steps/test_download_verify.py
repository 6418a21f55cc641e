"""Specification of how a local directory source's files are checked: safetensors headers
always, SHA-256 on request; a bad file is refused by name, with what is wrong with it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from llm_init import LLMConfig, SQLiteEventStore, initialize_node_sync
from llm_init.errors import StepError
from llm_init.events import StepFailed
from llm_init.replay import read_events
from llm_init.steps.download import ChecksumMismatchError, download_step
from llm_init.stores.base import InitQuery
from tests.support.download import run_step
from tests.support.models import read_tree, write_model
from tests.support.steps import local_steps

SHARD = "model-00002-of-00002.safetensors"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "src"
    write_model(path, shards=2, shard_size=300_000)
    return path


def truncate(path: Path, keep: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(keep)


def overwrite(path: Path, offset: int, data: bytes) -> None:
    """Overwrite bytes in place: the size and (restored) modification time stay."""
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_truncated_safetensors_source_fails_the_step_naming_the_file(
        tmp_path: Path, src: Path) -> None:
    """A shard cut short in the source directory is not copied as verified: the initialization
    fails, and its StepFailed names the shard and says it is truncated."""
    truncate(src / SHARD, 250_000)
    store = SQLiteEventStore(tmp_path / "events.sqlite")
    steps = local_steps(download=download_step(cache_dir=tmp_path / "cache",
                                               copy_local_source=True))
    with pytest.raises(StepError):
        initialize_node_sync(LLMConfig(model_id="tiny", model_source=str(src)),
                             event_store=store, steps=steps)
    (init_id,) = store.query_initializations(InitQuery())
    failed = [e for e in read_events(store, init_id) if isinstance(e, StepFailed)]
    store.close()
    assert len(failed) == 1
    assert f"{src}/{SHARD}" in failed[0].message
    assert "truncated" in failed[0].message
    assert list((tmp_path / "cache").rglob(SHARD)) == []  # nothing bad under its final name


def test_safetensors_header_overwritten_in_place_is_refused(tmp_path: Path, src: Path) -> None:
    """A shard whose header was overwritten (same size, same modification time) is refused,
    naming the file and the broken header."""
    overwrite(src / SHARD, 8, b"\xff" * 16)
    with pytest.raises(ChecksumMismatchError, match=f"{SHARD}: the safetensors header is not "
                                                    f"valid JSON") as caught:
        run_step(download_step(cache_dir=tmp_path / "cache"), src)
    assert caught.value.path == SHARD


def test_well_formed_safetensors_are_copied_and_counted_as_header_checked(
        tmp_path: Path, src: Path) -> None:
    """Intact shards pass the header check; the result counts how each file was verified."""
    result, _ = run_step(download_step(cache_dir=tmp_path / "cache", copy_local_source=True), src)
    assert result.nodes[0].verified == {"safetensors-header": 2, "size": 6}
    assert result.path is not None
    assert read_tree(Path(result.path)) == read_tree(src)


def test_sha256_catches_data_overwritten_against_the_directory_checksums(
        tmp_path: Path, src: Path) -> None:
    """With ``verify="sha256"``, tensor data overwritten in place (header intact) is refused
    against the SHA256SUMS the directory carries."""
    sums = "".join(f"{hashlib.sha256((src / n).read_bytes()).hexdigest()}  {n}\n"
                   for n in sorted(read_tree(src)))
    (src / "SHA256SUMS").write_text(sums)
    overwrite(src / SHARD, 200_000, b"\x00" * 64)
    with pytest.raises(ChecksumMismatchError, match=f"{SHARD}: sha256 is [0-9a-f]{{64}}, the "
                                                    f"source says [0-9a-f]{{64}}"):
        run_step(download_step(cache_dir=tmp_path / "cache", verify="sha256"), src)
    # The header check alone cannot see it: the data's size and offsets are right.
    result, _ = run_step(download_step(cache_dir=tmp_path / "cache2"), src)
    assert result.nodes[0].verified["safetensors-header"] == 2


def test_sha256_without_stated_checksums_hashes_the_source(tmp_path: Path, src: Path) -> None:
    """With ``verify="sha256"`` and no stated digest, every copy is compared with the SHA-256
    of its source file."""
    result, _ = run_step(download_step(cache_dir=tmp_path / "cache", copy_local_source=True,
                                       verify="sha256"), src)
    assert result.nodes[0].verified == {"safetensors-header+sha256": 2, "sha256": 6}


def test_hub_cache_blob_names_are_the_reference(tmp_path: Path, src: Path) -> None:
    """A Hugging Face cache snapshot (files linking to blobs named by their SHA-256) is checked
    against the blob names: a blob changed in place is refused by name."""
    blobs, snapshot = tmp_path / "hub" / "blobs", tmp_path / "hub" / "snapshots" / "abc123"
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for name, data in read_tree(src).items():
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(blob, snapshot))
    overwrite((snapshot / SHARD).resolve(), 100_000, b"\x01" * 8)
    with pytest.raises(ChecksumMismatchError, match=f"{SHARD}: sha256 is"):
        run_step(download_step(cache_dir=tmp_path / "cache", verify="sha256"), snapshot)


def test_in_place_source_with_a_truncated_shard_is_refused(tmp_path: Path, src: Path) -> None:
    """A directory used in place gets the same header check, naming the file."""
    truncate(src / SHARD, 100)
    with pytest.raises(ChecksumMismatchError,
                       match=f"{src}/{SHARD}: .*truncated.*used in place"):
        run_step(download_step(cache_dir=tmp_path / "cache", copy_local_source=False), src)


def test_unknown_verify_mode_is_named() -> None:
    """A mistyped ``verify`` is refused at once, naming the value and the choices."""
    with pytest.raises(ValueError, match="verify='sha-256' is not one of header, sha256"):
        download_step(verify="sha-256")
