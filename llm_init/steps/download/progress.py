"""Download progress counters and the bandwidth cap a node's download threads share.

The threads update the counters; a reporter reads them."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

WEIGHTS_STAGE = "downloading_weights"


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """A consistent reading of a node's progress counters."""

    stage: str
    bytes_done: int
    bytes_total: int
    bytes_fetched: int
    files_done: int
    files_total: int


class NodeProgress:
    """Counters a node's download threads update and a reporter reads, under one lock.

    ``bytes_done`` counts every byte in place (complete files and resumed prefixes included);
    ``bytes_fetched`` counts only the bytes this run moved from the source.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stage = "starting"
        self._bytes_done = self._bytes_total = self._bytes_fetched = 0
        self._files_done = self._files_total = 0
        self.arriving_in: str | None = None

    def planned(self, files: int, nbytes: int) -> None:
        """Start counting a new plan: ``files`` files of ``nbytes`` bytes, none done yet."""
        with self._lock:
            self._files_total, self._bytes_total = files, nbytes
            self._files_done = self._bytes_done = 0

    def stage(self, stage: str) -> None:
        with self._lock:
            self._stage = stage

    def arriving(self, model_dir: str) -> None:
        """The small files are in ``model_dir`` and the weights are on their way (the
        overlapped start's cue, ``FetchOptions.weights_last``)."""
        with self._lock:
            self._stage, self.arriving_in = WEIGHTS_STAGE, model_dir

    def present(self, nbytes: int) -> None:
        with self._lock:
            self._bytes_done += nbytes

    def fetched(self, nbytes: int) -> None:
        with self._lock:
            self._bytes_done += nbytes
            self._bytes_fetched += nbytes

    def file_done(self) -> None:
        with self._lock:
            self._files_done += 1

    def snapshot(self) -> ProgressSnapshot:
        with self._lock:
            return ProgressSnapshot(self._stage, self._bytes_done, self._bytes_total,
                                    self._bytes_fetched, self._files_done, self._files_total)


class RateLimiter:
    """Caps the bytes per second of all threads together (no cap when ``rate`` is ``None``)."""

    def __init__(self, rate: float | None, stop: threading.Event) -> None:
        self._rate = rate
        self._stop = stop
        self._lock = threading.Lock()
        self._next = time.monotonic()

    def consumed(self, nbytes: int) -> None:
        if not self._rate:
            return
        with self._lock:
            now = time.monotonic()
            self._next = max(self._next, now) + nbytes / self._rate
            delay = self._next - now
        self._stop.wait(delay)
