"""The download step against a real S3 HTTP API on loopback (moto's server): verification,
resume after a killed download, the per-node lock, and the events of a whole initialization."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_init import (
    DefaultSteps,
    InMemoryEventStore,
    LLMConfig,
    NodeInitializationContext,
    StepError,
    StepProgressed,
    initialize_node_sync,
    read_events,
)
from llm_init.steps.download import (
    ChecksumMismatchError,
    DownloadError,
    DownloadResult,
    DownloadStep,
    SourceSpec,
)
from llm_init.steps.download.fetch import JOURNAL, PARTIAL_DIR
from llm_init.steps.download.s3 import S3Source
from tests.support.models import read_tree, write_model
from tests.support.s3 import MIB, MotoS3, running_moto_s3
from tests.support.steps import SettingStep

ROOT = Path(__file__).resolve().parents[2]
# Slow enough that a test can stop a download half-way, fast enough to keep tests short.
BANDWIDTH = 4 * MIB
CHUNK = 64 * 1024


def run_step(step: DownloadStep, source: str) -> DownloadResult:
    config = LLMConfig(model_id="tiny", model_source=source)
    ctx = NodeInitializationContext.for_config("init-s3", config)
    asyncio.run(step.run(ctx, lambda **details: None))
    result: DownloadResult = ctx.download_result
    return result


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[MotoS3]:
    with running_moto_s3() as server:
        yield server


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model with one file of two 8 MiB parts (9 MiB) and eight small ones."""
    src = tmp_path_factory.mktemp("small")
    write_model(src, shards=2, shard_size=200_000, extra={"extra/big.safetensors": 9 * MIB})
    return src


@pytest.fixture(scope="module")
def small(moto_s3: MotoS3, small_model: Path) -> tuple[str, Path]:
    """The small model as boto3 uploads it: every object with the store's CRC32."""
    return moto_s3.upload_dir(small_model, "models/small"), small_model


@pytest.fixture(scope="module")
def throttled(moto_s3: MotoS3, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A 6 MiB model: about 1.5 s at ``BANDWIDTH``."""
    src = tmp_path_factory.mktemp("throttled")
    write_model(src, shards=3, shard_size=2 * MIB)
    return moto_s3.upload_dir(src, "models/throttled"), src


def worker(source: str, cache: Path, endpoint: str, *extra: str) -> subprocess.Popen[str]:
    """The download step in a process of its own, throttled to ``BANDWIDTH``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.support.download_worker", source, str(cache),
         "--endpoint-url", endpoint, "--max-bandwidth", str(BANDWIDTH),
         "--chunk-size", str(CHUNK), *extra],
        stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def bytes_on_disk(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


def kill_half_way(source: str, cache: Path, endpoint: str, total: int) -> Path:
    """Start a download, SIGKILL it once about a third of ``total`` is on disk; return the
    model directory it was writing."""
    proc = worker(source, cache, endpoint)
    deadline = time.monotonic() + 20
    while bytes_on_disk(cache) < total // 3:
        assert proc.poll() is None, "the download finished before it could be killed"
        assert time.monotonic() < deadline, "the download made no progress"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (model_dir,) = cache.iterdir()
    return model_dir


def in_place(model_dir: Path) -> int:
    """Bytes a new run can keep: journaled complete files plus partial files."""
    state = model_dir / ".llm-init"
    done = set()
    if (state / JOURNAL).exists():
        done = {json.loads(line)["path"] for line in (state / JOURNAL).read_text().splitlines()}
    partial = sum(p.stat().st_size for p in (state / PARTIAL_DIR).rglob("*.part"))
    return partial + sum((model_dir / name).stat().st_size for name in done)


def test_download_verifies_the_stores_crc32(moto_s3, small, tmp_path) -> None:
    """An S3 prefix arrives byte for byte, each object checked against the store's CRC32:
    whole-object for single-part objects, composite over the parts for the multipart one."""
    uri, src = small
    result = run_step(DownloadStep(endpoint_url=moto_s3.endpoint_url, cache_dir=tmp_path), uri)
    assert read_tree(Path(result.path or "")) == read_tree(src)
    assert result.nodes[0].verified == {"crc32": 8, "s3-composite-crc32": 1}


def test_download_verifies_md5_etags(moto_s3, small_model, tmp_path) -> None:
    """Objects with no store checksum are checked by their ETags: the MD5 for single-part
    objects, the multipart MD5 for the multipart one."""
    uri = moto_s3.upload_dir(small_model, "models/etag-only", checksums=False)
    result = run_step(DownloadStep(endpoint_url=moto_s3.endpoint_url, cache_dir=tmp_path), uri)
    assert read_tree(Path(result.path or "")) == read_tree(small_model)
    assert result.nodes[0].verified == {"md5": 8, "s3-multipart-md5": 1}


def test_endpoint_from_environment(moto_s3, small, tmp_path, monkeypatch) -> None:
    """Without ``endpoint_url``, boto3's AWS_ENDPOINT_URL points the step at the store."""
    uri, _ = small
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_s3.endpoint_url)
    result = run_step(DownloadStep(cache_dir=tmp_path, allow_patterns=["*.json"]), uri)
    assert result.files_fetched == 6


def test_resume_fetches_only_what_is_missing(moto_s3, throttled, tmp_path) -> None:
    """After a download is killed (SIGKILL) half-way, the next run fetches exactly the bytes
    not yet on disk, and every file ends up intact."""
    uri, src = throttled
    total = sum(len(b) for b in read_tree(src).values())
    model_dir = kill_half_way(uri, tmp_path, moto_s3.endpoint_url, total)
    kept = in_place(model_dir)
    result = run_step(DownloadStep(endpoint_url=moto_s3.endpoint_url, cache_dir=tmp_path), uri)
    assert 0 < kept < total
    assert result.bytes_fetched == total - kept
    assert read_tree(model_dir) == read_tree(src)


def test_corrupt_partial_file_is_detected(moto_s3, throttled, tmp_path) -> None:
    """A partial file corrupted between runs fails the checksum with an error naming the file,
    and is removed so that the next run fetches it whole."""
    uri, _ = throttled
    model_dir = kill_half_way(uri, tmp_path, moto_s3.endpoint_url, 6 * MIB)
    partial = max((model_dir / ".llm-init" / PARTIAL_DIR).rglob("*.part"),
                  key=lambda p: p.stat().st_size)
    with open(partial, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    name = partial.name.rsplit(".", 2)[0]
    step = DownloadStep(endpoint_url=moto_s3.endpoint_url, cache_dir=tmp_path)
    with pytest.raises(ChecksumMismatchError, match=f"{name}: .*the source says") as caught:
        run_step(step, uri)
    assert caught.value.path == name
    assert not partial.exists()


def test_object_changed_during_download_is_refused(moto_s3, tmp_path) -> None:
    """An object replaced after it was listed is not read: the error names it."""
    src = tmp_path / "src"
    write_model(src, shards=1, shard_size=1000)
    uri = moto_s3.upload_dir(src, "models/changing")
    source = S3Source(SourceSpec("s3", uri, endpoint_url=moto_s3.endpoint_url))
    listed = {f.path: f for f in source.listing().files}
    moto_s3.put(f"{uri}/model.safetensors", b"new weights")
    with pytest.raises(DownloadError, match=r"model\.safetensors changed"):
        list(source.read(listed["model.safetensors"], 0, 1024))


def test_keys_leading_outside_the_model_are_refused(moto_s3, tmp_path) -> None:
    """An object whose key would land outside the model directory fails the download, naming
    it, before anything is written."""
    moto_s3.put("s3://models/evil/config.json", b"{}")
    moto_s3.put("s3://models/evil/sub/../../escape.json", b"{}")
    with pytest.raises(DownloadError, match=r"escape\.json: refusing"):
        run_step(DownloadStep(endpoint_url=moto_s3.endpoint_url, cache_dir=tmp_path / "c"),
                 "s3://models/evil")
    assert not list(tmp_path.rglob("*.json"))


def test_two_processes_on_a_node_fetch_once(moto_s3, throttled, tmp_path) -> None:
    """Two processes downloading the same model on one node at once fetch its bytes once:
    the second waits for the lock, then finds the files complete."""
    uri, src = throttled
    total = sum(len(b) for b in read_tree(src).values())
    procs = [worker(uri, tmp_path, moto_s3.endpoint_url) for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0].splitlines() for p in procs]
    results = [json.loads(lines[-1]) for lines in outputs]
    assert sorted(r["bytes_fetched"] for r in results) == [0, total]
    assert results[0]["path"] == results[1]["path"]


def test_initialization_records_download_progress(moto_s3, throttled, tmp_path) -> None:
    """A whole initialization with the S3 download step records StepProgressed events whose
    byte deltas add up to the model, then the typed result as a context change."""
    uri, src = throttled
    total = sum(len(b) for b in read_tree(src).values())
    store = InMemoryEventStore()
    steps = DefaultSteps(
        download=DownloadStep(endpoint_url=moto_s3.endpoint_url, cache_dir=tmp_path,
                              max_bandwidth=BANDWIDTH, chunk_size=CHUNK),
        placement_group=SettingStep("placement_group", {"bundles": [{"CPU": 1}]}),
        engine=SettingStep("engine", "engine-handle"),
    )
    ctx = initialize_node_sync(LLMConfig(model_id="tiny", model_source=uri),
                               event_store=store, steps=steps)
    events = read_events(store, ctx.init_id)
    progress: list[dict[str, Any]] = [e.details for e in events if isinstance(e, StepProgressed)]
    assert sum(p["bytes_delta"] for p in progress) == total
    assert len([p for p in progress if p["bytes_delta"] > 0]) >= 3  # live, not only at the end
    assert progress[-1]["stage"] == "node_completed"
    changed = [e for e in events if getattr(e, "field", None) == "download_result"]
    assert changed[0].new["bytes_fetched"] == total  # type: ignore[attr-defined]  # a field of the Event subclass read


def test_failure_is_a_step_error_naming_the_source(moto_s3, tmp_path) -> None:
    """A prefix with no objects fails the initialization with a StepError naming it."""
    steps = DefaultSteps(download=DownloadStep(endpoint_url=moto_s3.endpoint_url,
                                               cache_dir=tmp_path))
    with pytest.raises(StepError, match="s3://models/nothing-here"):
        initialize_node_sync(LLMConfig(model_id="tiny", model_source="s3://models/nothing-here"),
                             event_store=InMemoryEventStore(), steps=steps)


def test_moto_server_keeps_flask_out_of_the_test_process() -> None:
    """The S3 server runs apart: Flask, whose proxies break an in-process vLLM engine started
    later in the same process, is never imported into it."""
    code = ("import sys\nfrom tests.support.s3 import running_moto_s3\n"
            "with running_moto_s3() as s3:\n    s3.client().create_bucket(Bucket='models')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'moto')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (out.returncode, out.stdout.strip()) == (0, "[]"), out.stderr
