"""Bounds on a warm start: a restore never delays, fills or misreports the start it was meant
to speed up. Real sockets, moto's S3 server, tmpfs mounts, GNU tar archives and processes."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from prometheus_client import CollectorRegistry

import llm_init
from llm_init import DefaultSteps, InMemoryEventStore, LLMConfig, initialize_node_sync
from llm_init.artifacts import (
    ArtifactStore,
    DirectoryArtifactStore,
    Manifest,
    open_artifact_store,
    publish,
)
from llm_init.artifacts import manifest as manifest_module
from llm_init.artifacts import restore as restore_artifact
from llm_init.artifacts import transfer as transfer_module
from llm_init.artifacts.key import device_identity, make_key
from llm_init.artifacts.manifest import ArtifactFile, file_sha256
from llm_init.artifacts.settings import ArtifactSettings
from llm_init.artifacts.transfer import (
    MAX_INDEX_ENTRY_BYTES,
    MAX_MANIFEST_BYTES,
    index_name,
    manifest_name,
)
from llm_init.events import ArtifactMissed
from llm_init.replay import read_events
from llm_init.steps.download import DownloadStep
from llm_init.steps.warm_start import restore_on_node
from llm_init.telemetry.backends import PrometheusBackend
from llm_init.telemetry.metrics import MetricsCallback
from tests.support.models import write_model
from tests.support.net import free_port, silent_server
from tests.support.s3 import ENV, MIB, running_moto_s3
from tests.support.steps import SettingStep
from tests.support.warm import CachingEngineStep

CODE_ROOT = str(Path(llm_init.__file__).parents[1])  # the llm_init under test, for children
PARTS = {"vllm": "0.32.0", "torch": "2.13.0", "model.weights": "abc"}
KEY = "b" * 24


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a local disk that fills up."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """An HTTP endpoint that accepts connections and never answers."""
    with silent_server() as url:
        yield url


def make_cache(root: Path, size: int = 6000) -> Path:
    (root / "torch_compile_cache" / "abc").mkdir(parents=True)
    (root / "torch_compile_cache" / "abc" / "graph.py").write_bytes(os.urandom(size))
    return root


def hand_made(store: DirectoryArtifactStore, members: list[tuple[tarfile.TarInfo, bytes]],
              files: list[ArtifactFile], tmp_path: Path) -> None:
    """Publish ``KEY`` as a manifest listing ``files`` over a tar of ``members``."""
    archive = tmp_path / "hand.tar"
    with tarfile.open(archive, "w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    publish_archive(store, archive, files)


def publish_archive(store: DirectoryArtifactStore, archive: Path,
                    files: list[ArtifactFile]) -> None:
    store.put(f"{KEY}/data-x.tar", archive)
    manifest = Manifest(key=KEY, parts=PARTS, archive="data-x.tar",
                        archive_bytes=archive.stat().st_size,
                        archive_sha256=file_sha256(archive), files=tuple(files),
                        created_at=time.time())
    store.put_new(manifest_name(KEY), manifest.to_json())


def start(tmp_path: Path, artifact_store: dict[str, Any]) -> tuple[list[Any], float]:
    """One initialization with a warm start configured by ``artifact_store``; its events and
    how long ``initialize_node_sync`` took."""
    source = tmp_path / "model"
    if not source.exists():
        write_model(source, shards=1, shard_size=50_000)
    config = LLMConfig(model_id="tiny", model_source=str(source),
                       engine_kwargs={"dtype": "bfloat16", "max_model_len": 256},
                       artifact_store={"cache_dir": str(tmp_path / "warm"),
                                       "model_link_dir": str(tmp_path / "links"),
                                       **artifact_store})
    steps = DefaultSteps(download=DownloadStep(cache_dir=tmp_path / "models"),
                         placement_group=SettingStep("placement_group", None),
                         engine=CachingEngineStep())
    store = InMemoryEventStore()
    began = time.monotonic()
    ctx = initialize_node_sync(config, event_store=store, steps=steps)
    return list(read_events(store, ctx.init_id)), time.monotonic() - began


def test_a_silent_s3_endpoint_delays_the_start_by_the_timeout_only(
        tmp_path: Path, silent_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An S3 endpoint that accepts and never answers: the initialization returns within
    timeout_s and a few seconds, with a timeout miss, not after botocore's minutes."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    result: dict[str, Any] = {}

    def run() -> None:
        result["events"], result["seconds"] = start(
            tmp_path, {"url": "s3://bucket/warm", "endpoint_url": silent_endpoint,
                       "timeout_s": 2})

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(2 + 8)
    assert not thread.is_alive(), "initialize_node_sync still waits for the restore"
    missed, = [e for e in result["events"] if isinstance(e, ArtifactMissed)]
    assert missed.reason == "timeout"
    assert result["seconds"] < 2 + 5


def test_a_restore_on_another_node_past_the_deadline_puts_nothing_in_the_cache(
        tmp_path: Path) -> None:
    """A node's restore that runs after the first node stopped waiting (its deadline passed)
    is a timeout miss and leaves that node's cache empty."""
    key = make_key({**PARTS, **device_identity()})
    store_dir = tmp_path / "store"
    publish(DirectoryArtifactStore(store_dir), key.digest, key.parts, make_cache(tmp_path / "c"))
    settings = ArtifactSettings(url=f"file://{store_dir}", cache_dir=str(tmp_path / "warm"),
                                model_link_dir=None)
    outcome = restore_on_node(settings, key, None, time.time() - 1)
    assert (outcome.result, outcome.reason) == ("miss", "timeout")
    assert not (tmp_path / "warm" / key.digest).exists()


def test_a_restore_over_max_bytes_is_a_too_large_miss(tmp_path: Path) -> None:
    """A 2 MiB artifact under max_bytes = 1 MiB is not restored: the start records
    too_large and the engine compiles from scratch."""
    store_dir = tmp_path / "store"
    events, _ = start(tmp_path, {"url": f"file://{store_dir}", "max_bytes": MIB})
    missed, = [e for e in events if isinstance(e, ArtifactMissed)]
    publish(DirectoryArtifactStore(store_dir), missed.key, missed.parts,
            make_cache(tmp_path / "big", 2 * MIB))
    events, _ = start(tmp_path, {"url": f"file://{store_dir}", "max_bytes": MIB,
                                 "cache_dir": str(tmp_path / "warm2")})
    missed, = [e for e in events if isinstance(e, ArtifactMissed)]
    assert missed.reason == "too_large"
    assert not (tmp_path / "warm2" / missed.key / ".llm-init-restored").exists()


@pytest.fixture(params=["dir", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    """A directory store (on another file system than the tmpfs: copied, not linked) or an
    S3 store on moto's server."""
    if request.param == "dir":
        yield DirectoryArtifactStore(tmp_path / "store")
        return
    bucket = f"artifacts-{uuid.uuid4().hex[:12]}"
    with running_moto_s3() as s3:
        s3.client().create_bucket(Bucket=bucket)
        yield open_artifact_store(f"s3://{bucket}/warm", endpoint_url=s3.endpoint_url,
                                  timeout_s=30)


def test_an_archive_larger_than_its_manifest_is_cut_at_the_manifests_size(
        tmp_path: Path, tmpfs: Path, store: ArtifactStore) -> None:
    """An archive grown to 4 MiB behind a small manifest is fetched only up to the manifest's
    size (a 1 MiB disk does not fill up) and is a corrupt artifact, set aside."""
    publish(store, KEY, PARTS, make_cache(tmp_path / "cold"))
    manifest = Manifest.from_json(store.read(manifest_name(KEY)) or b"")
    grown = tmp_path / "grown.tar"
    grown.write_bytes(os.urandom(4 * MIB))
    store.put(f"{KEY}/{manifest.archive}", grown)
    outcome = restore_artifact(store, KEY, PARTS, tmpfs / "warm")
    assert (outcome.result, outcome.reason) == ("miss", "corrupt")
    assert store.read(manifest_name(KEY)) is None


def test_a_full_local_disk_while_fetching_is_a_local_error(
        tmp_path: Path, tmpfs: Path, store: ArtifactStore) -> None:
    """A 2 MiB artifact fetched onto a 1 MiB disk is a local_error miss (the store is fine:
    it is neither unreachable nor set aside)."""
    publish(store, KEY, PARTS, make_cache(tmp_path / "cold", 2 * MIB))
    outcome = restore_artifact(store, KEY, PARTS, tmpfs / "warm")
    assert (outcome.result, outcome.reason) == ("miss", "local_error")
    assert store.read(manifest_name(KEY)) is not None


def test_a_manifest_over_the_cap_is_too_large_and_not_parsed(tmp_path: Path) -> None:
    """A manifest larger than MAX_MANIFEST_BYTES is a too_large miss: read no further than
    the cap, never parsed, never taken for corruption."""
    store = DirectoryArtifactStore(tmp_path / "store")
    store.put_new(manifest_name(KEY), b'{"format": 1, "pad": "'
                  + b"x" * MAX_MANIFEST_BYTES + b'"}')
    outcome = restore_artifact(store, KEY, PARTS, tmp_path / "warm")
    assert (outcome.result, outcome.reason) == ("miss", "too_large")
    assert store.read(manifest_name(KEY)) is not None


def test_an_oversized_index_entry_is_not_read_to_explain_a_miss(tmp_path: Path) -> None:
    """An index entry over MAX_INDEX_ENTRY_BYTES is left unread: the miss names no nearest
    artifact from it."""
    store = DirectoryArtifactStore(tmp_path / "store")
    other = {**PARTS, "torch": "2.14.0"}
    store.put_new(index_name(other, "o" * 24), json.dumps(
        {**other, "pad": "x" * MAX_INDEX_ENTRY_BYTES}).encode())
    outcome = restore_artifact(store, KEY, PARTS, tmp_path / "warm")
    assert (outcome.reason, outcome.nearest) == ("no_match", None)


def test_a_sparse_member_is_corrupt_and_unpacks_nothing(tmp_path: Path) -> None:
    """A GNU sparse tar of a few KiB that would unpack to 64 MiB is a corrupt artifact; no
    byte of it reaches the disk."""
    sparse = tmp_path / "src" / "graph.py"
    sparse.parent.mkdir()
    with sparse.open("wb") as out:
        out.truncate(64 * MIB)
    archive = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "--format=gnu", "-cf", str(archive), "-C",
                    str(sparse.parent), "graph.py"], check=True)
    assert archive.stat().st_size < 64 * 1024
    digest = hashlib.sha256(b"\0" * (64 * MIB)).hexdigest()
    store = DirectoryArtifactStore(tmp_path / "store")
    publish_archive(store, archive, [ArtifactFile("graph.py", 64 * MIB, digest)])
    outcome = restore_artifact(store, KEY, PARTS, tmp_path / "warm")
    assert (outcome.result, outcome.reason) == ("miss", "corrupt")
    assert not (tmp_path / "warm").exists()


def test_a_member_named_dot_is_corrupt_and_set_aside(tmp_path: Path) -> None:
    """A manifest and archive whose file is named ``.`` are a corrupt artifact, set aside
    so a publish can replace it (not a local_error that stays forever)."""
    store = DirectoryArtifactStore(tmp_path / "store")
    data = b"hello"
    hand_made(store, [(tarfile.TarInfo("."), data)],
              [ArtifactFile(".", len(data), hashlib.sha256(data).hexdigest())], tmp_path)
    outcome = restore_artifact(store, KEY, PARTS, tmp_path / "warm")
    assert (outcome.result, outcome.reason) == ("miss", "corrupt")
    assert store.read(manifest_name(KEY)) is None


def test_an_s3_store_that_refuses_access_is_denied(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """An S3 store that answers 403 (unknown credentials) is a denied miss, not
    unreachable."""
    monkeypatch.setenv("INITIAL_NO_AUTH_ACTION_COUNT", "0")  # moto then checks credentials
    with running_moto_s3() as s3:
        store = open_artifact_store(f"s3://artifacts-{uuid.uuid4().hex[:12]}/warm",
                                    endpoint_url=s3.endpoint_url)
        outcome = restore_artifact(store, KEY, PARTS, tmp_path / "warm")
    assert (outcome.result, outcome.reason) == ("miss", "denied")


class _SlowS3(http.server.BaseHTTPRequestHandler):
    """S3 as far as GET and HEAD of the objects under ``bucket/warm/``: manifests answer at
    once, archives (``data-*``) in ``PIECES`` pieces ``pace_s`` apart, or never
    (``pace_s`` None)."""

    PIECES = 6
    objects: ClassVar[dict[str, bytes]] = {}
    pace_s: ClassVar[float | None] = None
    sent: ClassVar[list[str]] = []  # the archives sent whole

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        name = self.path.split("?")[0].partition("/warm/")[2]
        slow = "data-" in name
        if slow and self.pace_s is None:
            time.sleep(3600)
        body = self.objects.get(name)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "GET":
            return
        step = -(-len(body) // self.PIECES) if slow else len(body)
        for start in range(0, len(body), step):
            if slow and self.pace_s:
                time.sleep(self.pace_s)
            self.wfile.write(body[start:start + step])
            self.wfile.flush()
        if slow:
            self.sent.append(name)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def slow_s3(store: DirectoryArtifactStore, pace_s: float | None
            ) -> Iterator[tuple[str, list[str]]]:
    """An S3 endpoint serving ``store``'s objects as ``s3://bucket/warm/...``, and the list
    of the archives it has sent whole."""
    sent: list[str] = []
    handler = type("Handler", (_SlowS3,), {
        "objects": {name: store.read(name) or b"" for name in store.list()},
        "pace_s": pace_s, "sent": sent})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", sent
    finally:
        server.shutdown()
        server.server_close()


def test_a_restore_finishing_after_the_timeout_puts_nothing_in_the_cache(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An archive that trickles in over twice timeout_s: the start goes on at the timeout,
    and once the archive has arrived in full, nothing of it is in the engine's cache."""
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    events, _ = start(tmp_path, {"url": f"file://{tmp_path / 'cold-store'}"})
    missed, = [e for e in events if isinstance(e, ArtifactMissed)]
    store = DirectoryArtifactStore(tmp_path / "store")
    publish(store, missed.key, missed.parts, make_cache(tmp_path / "cold"))
    with slow_s3(store, pace_s=1.0) as (endpoint, sent):
        began = time.monotonic()
        events, seconds = start(tmp_path, {"url": "s3://bucket/warm", "endpoint_url": endpoint,
                                           "timeout_s": 3, "cache_dir": str(tmp_path / "w2")})
        late, = [e for e in events if isinstance(e, ArtifactMissed)]
        while not sent and time.monotonic() - began < 20:
            time.sleep(0.2)
        time.sleep(1)  # the restore's own verification and unpacking
    assert sent, "the archive never arrived in full"
    assert (late.reason, seconds < 3 + 5) == ("timeout", True)
    assert not (tmp_path / "w2" / missed.key / ".llm-init-restored").exists()
    assert not list((tmp_path / "w2").glob(f".{missed.key}.*"))


def test_a_restore_killed_mid_fetch_leaves_no_staging_behind(tmp_path: Path) -> None:
    """A restore SIGKILLed while it fetches leaves its staging directory; the next restore
    into the same cache directory removes it."""
    published = DirectoryArtifactStore(tmp_path / "store")
    publish(published, KEY, PARTS, make_cache(tmp_path / "cold"))
    with slow_s3(published, pace_s=None) as (endpoint, _):
        dest = tmp_path / "cache" / KEY
        killed_while_fetching(endpoint, dest)
    restore_artifact(DirectoryArtifactStore(tmp_path / "empty"), KEY, PARTS, dest)
    assert list(dest.parent.iterdir()) == []


def killed_while_fetching(endpoint: str, dest: Path) -> None:
    """Run a restore into ``dest`` in a process of its own and SIGKILL it once it fetches."""
    script = ("import sys; from pathlib import Path\n"
              "from llm_init.artifacts import open_artifact_store, restore\n"
              f"store = open_artifact_store('s3://bucket/warm', endpoint_url={endpoint!r})\n"
              f"restore(store, {KEY!r}, {PARTS!r}, Path({str(dest)!r}))\n")
    child = subprocess.Popen([sys.executable, "-c", script],
                             env={**os.environ, **ENV, "PYTHONPATH": CODE_ROOT})
    try:
        deadline = time.monotonic() + 60
        while not list(dest.parent.glob(f".{KEY}.*")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(dest.parent.glob(f".{KEY}.*")), "the restore never began to fetch"
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_a_file_vanishing_while_publishing_is_left_out(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A temporary file the engine removes after the cache was listed is left out of the
    artifact; the rest is published, and publish does not raise."""
    cache = make_cache(tmp_path / "cold")
    real_scan = manifest_module.scan

    def scan_then_remove(root: Path) -> list[Path]:
        (root / "tmp-compile.py").write_text("partial\n")
        found = real_scan(root)
        (root / "tmp-compile.py").unlink()  # vLLM cleaning up behind the listing
        return found

    monkeypatch.setattr(manifest_module, "scan", scan_then_remove)
    monkeypatch.setattr(transfer_module, "scan", scan_then_remove)
    store = DirectoryArtifactStore(tmp_path / "store")
    outcome = publish(store, KEY, PARTS, cache)
    assert (outcome.result, outcome.files) == ("published", 1)
    restored = restore_artifact(store, KEY, PARTS, tmp_path / "warm")
    assert (restored.result, restored.files) == ("hit", 1)


def test_a_store_directory_this_user_may_not_read_is_denied(tmp_path: Path) -> None:
    """A directory store whose files this user may not read (a forked restore running as
    ``nobody``) is a denied miss, not unreachable."""
    if os.geteuid() != 0:
        pytest.skip("dropping to another user needs root")
    store = DirectoryArtifactStore(tmp_path / "store")
    publish(store, KEY, PARTS, make_cache(tmp_path / "cold"))
    (tmp_path / "store").chmod(0o700)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, restore, report the reason
        try:
            os.setgid(65534)
            os.setuid(65534)
            outcome = restore_artifact(store, KEY, PARTS, tmp_path / "warm")
            os.write(write_end, f"{outcome.result} {outcome.reason}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        reported = pipe.read().decode()
    os.waitpid(pid, 0)
    assert reported == "miss denied"


def test_staging_left_by_a_dead_process_or_over_an_hour_old_is_removed(tmp_path: Path) -> None:
    """Before it fetches, a restore removes staging directories whose process is gone or
    that are over an hour old, and keeps a live process's recent one."""
    dest = tmp_path / "cache" / KEY
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = {dest.parent / f".{KEY}.{gone.pid}.x1", dest.parent / f".{KEY}.y2"}
    live = dest.parent / f".{KEY}.{os.getppid()}.z3"
    for path in (*stale, live):
        path.mkdir(parents=True)
    hour_ago = time.time() - 3700
    os.utime(dest.parent / f".{KEY}.y2", (hour_ago, hour_ago))
    restore_artifact(DirectoryArtifactStore(tmp_path / "empty"), KEY, PARTS, dest)
    assert list(dest.parent.iterdir()) == [live]


@pytest.mark.parametrize(("reason", "result"), [("denied", "error"), ("too_large", "miss")])
def test_a_denied_restore_counts_as_an_error_and_a_too_large_one_as_a_miss(
        reason: str, result: str) -> None:
    """In ``llm_init_artifact_cache_total``, a store that refused access is an ``error`` (it
    needs fixing), an artifact over the cap a plain ``miss``."""
    registry = CollectorRegistry()
    metrics = MetricsCallback(PrometheusBackend(registry, port=None))
    metrics.on_event(ArtifactMissed(init_id="i", sequence=5, timestamp=datetime.now(UTC),
                                    key=KEY, store="file:///s", reason=reason))
    assert registry.get_sample_value("llm_init_artifact_cache_total",
                                     {"model": "unknown", "result": result}) == 1
