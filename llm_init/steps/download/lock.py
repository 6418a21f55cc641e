"""The per-node download lock: one process at a time fetches a given model on a node."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from llm_init.steps.download.errors import DownloadStopped, LockTimeoutError

POLL_S = 0.1


class NodeLock:
    """An exclusive ``flock`` on ``path``, held for the whole download of one model directory.

    A second process (or thread) on the node waits, calling ``on_wait`` once with who holds it,
    then finds the files complete and fetches nothing. ``flock`` locks die with their process,
    so a killed download never leaves a stale lock.
    """

    def __init__(self, path: Path, *, timeout_s: float | None = None,
                 stop: threading.Event | None = None,
                 on_wait: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.stop = stop or threading.Event()
        self.on_wait = on_wait
        self._fd: int | None = None

    def __enter__(self) -> NodeLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._acquire(fd)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _acquire(self, fd: int) -> None:
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            if not waited:
                waited = True
                if self.on_wait is not None:
                    self.on_wait(self.holder())
            if deadline is not None and time.monotonic() > deadline:
                raise LockTimeoutError(
                    f"{self.path} was held by {self.holder()} for more than {self.timeout_s} s")
            if self.stop.wait(POLL_S):
                raise DownloadStopped(f"stopped while waiting for {self.path}")

    def holder(self) -> str:
        """Who holds the lock, as its holder wrote it (host and pid)."""
        with contextlib.suppress(OSError):
            return self.path.read_text().strip() or "another process"
        return "another process"
