"""Parallel, verified, resumable fetching of a model's files into one directory on this node.

Each file is streamed into ``.llm-init/partial/<path>.<version>.part``, digested as it arrives,
and renamed to its final name once its size and checksum match; a line in
``.llm-init/files.jsonl`` then records which version of it is complete. A later run skips
complete files and continues partial ones from their last byte (a ranged read), so an
interrupted download re-fetches only what is missing.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from llm_init.steps.download import arrival, safetensors
from llm_init.steps.download.checksums import MIB, SizeOnly, Verifier
from llm_init.steps.download.errors import (
    ChecksumMismatchError,
    DownloadError,
    DownloadStopped,
)
from llm_init.steps.download.progress import NodeProgress, RateLimiter
from llm_init.steps.download.sources import (
    STATE_DIR,
    WEIGHT_SUFFIXES,
    AllOf,
    RemoteFile,
    Source,
)

_log = logging.getLogger(__name__)
JOURNAL = "files.jsonl"
WRITEBACK_EVERY = 16 * MIB  # with fsync on: start writing a file back this often
PARTIAL_DIR = "partial"


@dataclass(frozen=True, slots=True)
class FetchOptions:
    """How a node fetches: parallel files, read size, retries, bandwidth cap, durability."""

    max_workers: int = 8
    chunk_size: int = 1 * MIB
    retries: int = 3  # per file, each continuing from the bytes already written
    max_bandwidth: float | None = None  # bytes per second for the node, all files together
    fsync: bool = True  # flush each file to disk before it gets its final name
    checksums: bool = True  # False: sizes only (no digest, no extra request per file)
    # The overlapped start: small files first, then the weights, announced beforehand and a
    # failure marker left for the engine that waits for them (``arrival``).
    weights_last: bool = False


@dataclass(slots=True)
class FetchStats:
    """What one ``Fetcher.fetch`` moved and how each file was verified."""

    files_fetched: int = 0
    bytes_fetched: int = 0
    verified: Counter[str] = field(default_factory=Counter)


@functools.cache
def _sync_file_range() -> Callable[..., int] | None:
    """Linux's ``sync_file_range`` from the C library already loaded, if there is one."""
    import ctypes

    function = getattr(ctypes.CDLL(None, use_errno=True), "sync_file_range", None)
    if function is not None:
        function.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
        function.restype = ctypes.c_int
    return function


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing a range of a file back to disk without waiting for it (Linux's
    ``sync_file_range(SYNC_FILE_RANGE_WRITE)``); elsewhere ``fdatasync``, which waits. Errors
    are left to the final ``fsync``, which reports them."""
    function = _sync_file_range()
    if function is None:
        os.fdatasync(fd)
    else:
        function(fd, offset, length, 2)  # SYNC_FILE_RANGE_WRITE


@dataclass(slots=True)
class _Cursor:
    offset: int  # bytes written and digested
    synced: int = 0  # bytes flushed to disk


class ShortReadError(Exception):
    """A stream ended before the file's last byte (retried like any network error)."""


class Journal:
    """``files.jsonl``: which version of each file is complete under its final name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.versions: dict[str, str] = {}
        with contextlib.suppress(FileNotFoundError), open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                    self.versions[entry["path"]] = entry["version"]
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a crash: that file is fetched again

    def record(self, file: RemoteFile, verified: str) -> None:
        line = json.dumps({"path": file.path, "version": file.version, "size": file.size,
                           "verified": verified})
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            self.versions[file.path] = file.version


class Fetcher:
    """Fetches files from one source into ``dest`` with ``options.max_workers`` threads."""

    def __init__(self, source: Source, dest: Path, progress: NodeProgress,
                 options: FetchOptions, stop: threading.Event) -> None:
        self.source = source
        self.dest = dest
        self.progress = progress
        self.options = options
        self.stop = stop
        self.state = dest / STATE_DIR
        self.journal = Journal(self.state / JOURNAL)
        self.limiter = RateLimiter(options.max_bandwidth, stop)
        self.stats = FetchStats()
        self._stats_lock = threading.Lock()

    def is_complete(self, file: RemoteFile) -> bool:
        """Whether this version of ``file`` is already in place."""
        if self.journal.versions.get(file.path) != file.version:
            return False
        try:
            return (self.dest / file.path).stat().st_size == file.size
        except FileNotFoundError:
            return False

    def fetch(self, files: Sequence[RemoteFile]) -> FetchStats:
        """Bring every file in ``files`` into place; raise the first failure."""
        for file in files:
            parts = file.path.split("/")
            if file.path.startswith("/") or any(p in ("", ".", "..") for p in parts) or (
                    parts[0] == STATE_DIR):
                raise DownloadError(f"{self._name(file)}: refusing a path that leads outside "
                                    f"the model directory or into its {STATE_DIR}")
        (self.state / PARTIAL_DIR).mkdir(parents=True, exist_ok=True)
        self.progress.planned(len(files), sum(f.size for f in files))
        todo = []
        for file in files:
            if self.is_complete(file):
                self.progress.present(file.size)
                self.progress.file_done()
            else:
                todo.append(file)
        if self.options.weights_last:
            return self._fetch_weights_last(files, todo)
        if not todo:
            return self.stats
        self.progress.stage("downloading")
        self._fetch_all(todo)
        return self.stats

    def _fetch_weights_last(self, files: Sequence[RemoteFile],
                            todo: list[RemoteFile]) -> FetchStats:
        """The small files, then (once the weight files are announced) the weights; a failure
        leaves the marker a waiting engine reads."""
        weights = [f for f in files if f.path.endswith(WEIGHT_SUFFIXES)]
        arrival.write_plan(self.dest, [arrival.PlannedFile(f.path, f.size, f.version)
                                       for f in weights])
        small = [f for f in todo if not f.path.endswith(WEIGHT_SUFFIXES)]
        try:
            if small:
                self.progress.stage("downloading")
                self._fetch_all(small)
            todo_weights = [f for f in todo if f.path.endswith(WEIGHT_SUFFIXES)]
            if todo_weights:  # (all in place already: nothing to start early for)
                self.progress.arriving(str(self.dest))
            self._fetch_all(todo_weights)
        except BaseException as exc:
            path = getattr(exc, "path", None) or next(
                (f.path for f in weights if self.journal.versions.get(f.path) != f.version),
                "?")
            arrival.write_failure(self.dest, path, str(exc))
            raise
        return self.stats

    def _fetch_all(self, todo: list[RemoteFile]) -> None:
        """Fetch ``todo`` in parallel, the largest first; raise the first failure."""
        if not todo:
            return
        todo = sorted(todo, key=lambda f: f.size, reverse=True)  # the largest first: a shorter tail
        workers = max(1, min(self.options.max_workers, len(todo)))
        with ThreadPoolExecutor(workers, thread_name_prefix="llm-init-fetch") as pool:
            futures = [pool.submit(self._fetch_one, file) for file in todo]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            errors = [e for f in done if (e := f.exception()) is not None]
            if errors:
                self.stop.set()  # the other files stop at their next chunk
                for future in futures:
                    future.cancel()
        if errors:
            errors.sort(key=lambda e: isinstance(e, DownloadStopped))  # the cause before its echoes
            raise errors[0]

    def _fetch_one(self, file: RemoteFile) -> None:
        if self.stop.is_set():
            raise DownloadStopped("the download was stopped")
        partial = self._partial_path(file)
        verifier = self.source.verifier(file) if self.options.checksums else SizeOnly()
        if self.options.weights_last and safetensors.is_safetensors(file.path) and (
                safetensors.METHOD not in verifier.method):
            # The engine opens each weight file the moment it is renamed: one cut short in
            # the store (its own checksum then matches) must fail here, naming it.
            verifier = AllOf([verifier, safetensors.SafetensorsHeader()])
        cursor = _Cursor(self._resume(partial, file, verifier))
        attempt = 0
        with open(partial, "ab", buffering=0) as out:
            while cursor.offset < file.size:
                try:
                    self._stream(file, cursor, out, verifier)
                except DownloadError:
                    raise
                except Exception as exc:  # network and server errors: continue where it ended
                    os.ftruncate(out.fileno(), cursor.offset)  # drop a half-written chunk
                    attempt += 1
                    if attempt > self.options.retries:
                        raise DownloadError(
                            f"{self._name(file)}: {type(exc).__name__}: {exc} (after "
                            f"{self.options.retries} retries, {cursor.offset} of {file.size} "
                            f"bytes in place)") from exc
                    _log.warning("%s: %s; retrying from byte %d", self._name(file), exc,
                                 cursor.offset)
                    self.stop.wait(min(0.25 * 2.0 ** attempt, 5.0))
            if self.options.fsync:
                os.fsync(out.fileno())
        problem = verifier.mismatch()
        if problem is not None:
            partial.unlink(missing_ok=True)
            raise ChecksumMismatchError(
                f"{self._name(file)}: {problem}; the partial file was removed, so the next "
                f"attempt fetches it again", path=file.path)
        final = self.dest / file.path
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, final)
        self.journal.record(file, verifier.method)
        self.progress.file_done()
        with self._stats_lock:
            self.stats.files_fetched += 1
            self.stats.verified[verifier.method] += 1

    def _stream(self, file: RemoteFile, cursor: _Cursor, out: io.FileIO,
                verifier: Verifier) -> None:
        """Append the source's bytes from ``cursor.offset`` to the end of the file, moving the
        cursor past every chunk written and digested. A stream that ends early raises
        ``ShortReadError``, which the caller retries from where it ended."""
        chunks = self.source.read(file, cursor.offset, self.options.chunk_size)
        with contextlib.closing(chunks):
            for chunk in chunks:
                if self.stop.is_set():
                    raise DownloadStopped("the download was stopped")
                if cursor.offset + len(chunk) > file.size:
                    raise ChecksumMismatchError(
                        f"{self._name(file)}: the source sent more than its {file.size} bytes",
                        path=file.path)
                view = memoryview(chunk)
                while view:
                    view = view[out.write(view) or 0:]
                verifier.update(chunk)
                cursor.offset += len(chunk)
                self.progress.fetched(len(chunk))
                with self._stats_lock:
                    self.stats.bytes_fetched += len(chunk)
                self.limiter.consumed(len(chunk))
                if self.options.fsync and cursor.offset - cursor.synced >= WRITEBACK_EVERY:
                    # Write back while downloading, so that the final fsync finds little left.
                    start_writeback(out.fileno(), cursor.synced, cursor.offset - cursor.synced)
                    cursor.synced = cursor.offset
        if cursor.offset < file.size:
            raise ShortReadError(f"the stream ended at byte {cursor.offset} of {file.size}")

    def _resume(self, partial: Path, file: RemoteFile, verifier: Verifier) -> int:
        """Digest what an earlier run left in ``partial``; return where to continue."""
        try:
            size = partial.stat().st_size
        except FileNotFoundError:
            return 0
        if size > file.size:
            partial.unlink()
            return 0
        with open(partial, "rb", buffering=0) as f:
            while chunk := f.read(self.options.chunk_size):
                verifier.update(chunk)
        self.progress.present(size)
        return size

    def _partial_path(self, file: RemoteFile) -> Path:
        """The file's partial name, unique per version; partials of other versions go."""
        tag = hashlib.sha1(file.version.encode(), usedforsecurity=False).hexdigest()[:12]
        partial = self.state / PARTIAL_DIR / f"{file.path}.{tag}.part"
        partial.parent.mkdir(parents=True, exist_ok=True)
        stem = re.escape(partial.name[:-len(tag) - len(".part")])
        other_versions = re.compile(stem + r"[0-9a-f]{12}\.part")
        for stale in partial.parent.iterdir():
            if stale != partial and other_versions.fullmatch(stale.name):
                stale.unlink(missing_ok=True)
        return partial

    def _name(self, file: RemoteFile) -> str:
        return f"{self.source.spec.uri.rstrip('/')}/{file.path}"
