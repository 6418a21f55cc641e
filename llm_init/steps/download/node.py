"""The download on one node: lock, list, select, fetch, record.

Runs in the initializing process
or in a Ray task pinned to the node; the same code either way."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from llm_init.config import NodeModelDownloadable
from llm_init.steps.download import safetensors
from llm_init.steps.download.checksums import Digest
from llm_init.steps.download.errors import (
    ChecksumMismatchError,
    OfflineCacheMissError,
    SourceNotFoundError,
)
from llm_init.steps.download.fetch import Fetcher, FetchOptions
from llm_init.steps.download.hf import HFSource
from llm_init.steps.download.lock import NodeLock
from llm_init.steps.download.manifest import ManifestSource, read_manifest, write_manifest
from llm_init.steps.download.progress import NodeProgress
from llm_init.steps.download.result import NodeDownloadResult
from llm_init.steps.download.s3 import S3Source
from llm_init.steps.download.sources import (
    STATE_DIR,
    LocalDirSource,
    LocalVerify,
    RemoteFile,
    Source,
    SourceSpec,
    select_files,
    walk_files,
)

CACHE_DIR_ENV = "LLM_INIT_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/llm-init/models"
LOCK = "lock"


@dataclass(frozen=True, slots=True, kw_only=True)
class NodePlan:
    """Everything a node needs to download its part: plain values, shipped to Ray tasks."""

    source: SourceSpec
    what: NodeModelDownloadable
    cache_dir: str | None = None  # None: ``LLM_INIT_CACHE_DIR`` or the default, on that node
    fetch: FetchOptions = field(default_factory=FetchOptions)
    prefer_safetensors: bool = True
    allow_patterns: tuple[str, ...] | None = None
    ignore_patterns: tuple[str, ...] = ()
    copy_local_source: bool = False  # as Ray Serve LLM: a local directory is used in place
    lock_timeout_s: float | None = None
    verify: LocalVerify = "header"  # how a local directory's files are checked


def cache_root(configured: str | None = None) -> Path:
    """Where models are kept on this node: ``configured``, ``LLM_INIT_CACHE_DIR``, or
    ``~/.cache/llm-init/models``."""
    return Path(configured or os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR).expanduser()


def open_source(spec: SourceSpec, *, verify: LocalVerify = "header") -> Source:
    """The live source, with its client, for reading on this node (``verify``: how a local
    directory's files are checked)."""
    if spec.kind == "s3":
        return S3Source(spec)
    if spec.kind == "hf":
        return HFSource(spec)
    if spec.kind == "gs":
        raise SourceNotFoundError(
            f"model source {spec.location}: llm-init does not download from gs://; only vLLM's "
            f"streaming load formats read it (engine_kwargs.load_format=runai_streamer), with "
            f"every node's download mode NONE")
    return LocalDirSource(spec, verify=verify)


def download_on_node(plan: NodePlan, *, node_id: str, progress: NodeProgress,
                     stop: threading.Event, ran_in: str = "process",
                     trace_id: str | None = None) -> NodeDownloadResult:
    """Bring ``plan.what`` of the model into this node's cache (or find it in place)."""
    run = _NodeRun(plan, node_id, progress, stop, ran_in, trace_id)
    try:
        return run.download()
    finally:
        progress.stage("done")


class _NodeRun:
    def __init__(self, plan: NodePlan, node_id: str, progress: NodeProgress,
                 stop: threading.Event, ran_in: str, trace_id: str | None) -> None:
        self.plan = plan
        self.node_id = node_id
        self.progress = progress
        self.stop = stop
        self.ran_in = ran_in
        self.trace_id = trace_id
        self.started = time.perf_counter()
        self.started_at = time.time()

    def download(self) -> NodeDownloadResult:
        plan = self.plan
        if plan.what == NodeModelDownloadable.NONE:
            return self._result(None, (), 0, revision=None, resolved_from="none")
        source = open_source(plan.source, verify=plan.verify)
        if isinstance(source, LocalDirSource) and not plan.copy_local_source:
            if not source.root.is_dir():
                raise SourceNotFoundError(f"model directory {source.root} does not exist")
            return self._in_place(source.root, None, "in place")
        dest = cache_root(plan.cache_dir) / source.cache_name
        if isinstance(source, HFSource) and source.offline:
            return self._offline(source, dest)
        return self._fetch(source, dest, "source")

    def _fetch(self, source: Source, dest: Path, resolved_from: str) -> NodeDownloadResult:
        plan, progress = self.plan, self.progress
        progress.stage("locking")
        lock = NodeLock(dest / STATE_DIR / LOCK, timeout_s=plan.lock_timeout_s, stop=self.stop,
                        on_wait=lambda holder: progress.stage("waiting_for_lock"))
        with lock:
            progress.stage("listing")
            listing = source.listing()
            files = select_files(listing.files, plan.what,
                                 prefer_safetensors=plan.prefer_safetensors,
                                 allow_patterns=plan.allow_patterns,
                                 ignore_patterns=plan.ignore_patterns)
            if not files:
                raise SourceNotFoundError(
                    f"{plan.source.uri} lists {len(listing.files)} files, none of them for "
                    f"{plan.what.value}")
            stats = Fetcher(source, dest, progress, plan.fetch, self.stop).fetch(files)
            if not isinstance(source, ManifestSource):
                write_manifest(dest, plan.source, listing)
        return self._result(str(dest), tuple(f.path for f in files), sum(f.size for f in files),
                            revision=listing.revision, resolved_from=resolved_from,
                            fetched=(stats.files_fetched, stats.bytes_fetched),
                            verified=stats.verified)

    def _offline(self, source: HFSource, dest: Path) -> NodeDownloadResult:
        """``HF_HUB_OFFLINE``: this cache if it holds every file, else the Hub's cache."""
        listing = read_manifest(dest)
        if listing is not None:
            try:
                cached = ManifestSource(source.spec, listing, source.cache_name)
                return self._fetch(cached, dest, "llm-init cache")
            except OfflineCacheMissError:
                pass  # some file is missing here: the Hub's cache may hold them all
        snapshot = source.cached_snapshot()
        return self._in_place(snapshot, snapshot.name, "hub cache")

    def _in_place(self, root: Path, revision: str | None,
                  resolved_from: str) -> NodeDownloadResult:
        """A directory already on this node: nothing is fetched, the selection is reported."""
        plan = self.plan
        files = select_files(tuple(walk_files(root)), plan.what,
                             prefer_safetensors=plan.prefer_safetensors,
                             allow_patterns=plan.allow_patterns,
                             ignore_patterns=plan.ignore_patterns)
        if not files:
            raise SourceNotFoundError(f"{root} holds no files for {plan.what.value}")
        verified = self._check_in_place(root, files) if plan.fetch.checksums else None
        total = sum(f.size for f in files)
        self.progress.planned(len(files), total)
        self.progress.present(total)
        for _ in files:
            self.progress.file_done()
        return self._result(str(root), tuple(f.path for f in files), total, revision=revision,
                            resolved_from=resolved_from, verified=verified)

    def _check_in_place(self, root: Path, files: tuple[RemoteFile, ...]) -> Counter[str]:
        """What a copy would check, on the files where they are: safetensors headers, and with
        ``verify="sha256"`` the digests the directory states (a file used in place has no
        other reference to compare with)."""
        verified: Counter[str] = Counter()
        for file in files:
            methods = []
            if safetensors.is_safetensors(file.path):
                self._refuse(root, file, safetensors.file_problem(root / file.path))
                methods.append(safetensors.METHOD)
            if self.plan.verify == "sha256" and file.checksum is not None:
                digest = Digest(file.checksum, file.size)
                with open(root / file.path, "rb", buffering=0) as f:
                    while chunk := f.read(self.plan.fetch.chunk_size):
                        digest.update(chunk)
                self._refuse(root, file, digest.mismatch())
                methods.append(digest.method)
            verified["+".join(methods) or "size"] += 1
        return verified

    @staticmethod
    def _refuse(root: Path, file: RemoteFile, problem: str | None) -> None:
        if problem is not None:
            raise ChecksumMismatchError(f"{root / file.path}: {problem}; the directory is used "
                                        f"in place, so fix or replace that file", path=file.path)

    def _result(self, path: str | None, files: tuple[str, ...], nbytes: int, *,
                revision: str | None, resolved_from: str, fetched: tuple[int, int] = (0, 0),
                verified: Counter[str] | None = None) -> NodeDownloadResult:
        seconds = time.perf_counter() - self.started
        files_fetched, bytes_fetched = fetched
        return NodeDownloadResult(
            node_id=self.node_id, path=path, what=self.plan.what, files=files,
            bytes_total=nbytes, bytes_fetched=bytes_fetched, files_fetched=files_fetched,
            seconds=seconds, throughput_bytes_per_s=bytes_fetched / seconds if seconds else 0.0,
            verified=dict(sorted((verified or {}).items())), revision=revision,
            resolved_from=resolved_from, ran_in=self.ran_in, hostname=socket.gethostname(),
            pid=os.getpid(), trace_id=self.trace_id, started_at=self.started_at,
        )
