"""A store wrapper that never fails an initialization because its database is away.

While the inner store (PostgreSQL) is reachable, appends go straight through. The first append
that finds it unreachable switches to a spool file on local disk; from then on every append is
written there (so order is kept) and a background thread retries, flushing the spool in order,
init by init, once the database answers, then switches back to direct appends.

Exactly once: a flush that meets events already stored (a commit whose answer was lost, or a
spool re-read after a crash) compares them and skips identical ones; a different event under
the same (init_id, sequence) is a real conflict and goes to a ``.rejected`` file with an error.
The spool is bounded (``max_bytes``); beyond it events are dropped and counted, loudly.
Spool files outlive their process: each is held with ``flock`` while its writer lives, and a
store opened later on the same spool directory adopts and flushes the files no one holds.

A spool belongs to one target: its directory is named by a digest of the target's identity
(for PostgreSQL: server, port, database, role and schema search path, so two schemas of one
database never share a spool), and each file starts with a header line naming that identity.
A file whose header names another target (or that has none) is never flushed: it is renamed
``*.foreign`` and reported.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import json
import logging
import os
import tempfile
import threading
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from llm_init.errors import DuplicateEventError, EventStoreError, EventStoreUnavailableError
from llm_init.events import Event, EventRejected
from llm_init.stores.base import (
    ChangeFeed,
    CheckableStore,
    DecodingStore,
    EventStore,
    InitQuery,
    PrefixSearchStore,
    QueryableStore,
    WatchableStore,
)
from llm_init.stores.codec import StoredEvent, decode, encode
from llm_init.telemetry.redaction import exception_message

SPOOL_ENV_VAR = "LLM_INIT_SPOOL_DIR"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_log = logging.getLogger(__name__)


def default_spool_root() -> Path:
    """``$LLM_INIT_SPOOL_DIR``, else a per-user directory under the system temp dir."""
    found = os.environ.get(SPOOL_ENV_VAR)
    if found:
        return Path(found)
    return Path(tempfile.gettempdir()) / f"llm-init-spool-{os.getuid()}"


class BufferedEventStore:
    """Wraps ``inner``: appends never raise for an unreachable store (see the module doc);
    reads go to ``inner`` unchanged."""

    def __init__(self, inner: EventStore, *, target: str, spool_root: Path | None = None,
                 max_bytes: int = DEFAULT_MAX_BYTES, retry_s: float = 0.25,
                 max_retry_s: float = 5.0, identity: str | None = None) -> None:
        self.inner = inner
        self.target = target
        # ``target`` names the store in messages; ``identity`` says which log it is.
        self.identity = target if identity is None else identity
        digest = hashlib.sha256(self.identity.encode()).hexdigest()[:16]
        self.spool_dir = (spool_root or default_spool_root()) / digest
        self.max_bytes = max_bytes
        self.dropped = 0
        self._retry_s, self._max_retry_s = retry_s, max_retry_s
        self._lock = threading.Lock()  # mode, spool writes
        self._flush_lock = threading.Lock()  # one flusher at a time
        self._offline = False
        self._spool: _SpoolFile | None = None
        self._flushed = 0  # bytes of our spool already in the inner store
        self._orphans: list[_SpoolFile] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._adopt_orphans()

    # -- writing -----------------------------------------------------------------------------

    def append(self, records: Sequence[StoredEvent]) -> None:
        if not records:
            return
        with self._lock:
            if not self._offline:
                try:
                    self.inner.append(records)
                    return
                except EventStoreUnavailableError as exc:
                    # Only unreachability is waited out: a store that refuses the records
                    # (a duplicate, a value it cannot hold) would refuse them from the spool
                    # too, and hold up every record behind them; the caller hears of it.
                    self._offline = True
                    _log.warning("event store %s failed (%s); buffering events on local disk "
                                 "in %s until it is back", self.target, exc, self.spool_dir)
            self._spool_write(records)
            self._start_flusher()

    def _spool_write(self, records: Sequence[StoredEvent]) -> None:
        try:
            if self._spool is None:
                self.spool_dir.mkdir(parents=True, exist_ok=True)
                self._spool = _SpoolFile.create(self.spool_dir, self.identity)
                self._flushed = self._spool.start
            full = self._spool.size() - self._flushed >= self.max_bytes
            if not full:
                self._spool.write(records)
                return
            why = f"the spool is full ({self.max_bytes} bytes)"
        except OSError as exc:
            why = f"the spool cannot be written ({exc})"
        self.dropped += len(records)
        _log.error("event store %s is unavailable and %s: dropped %d events of %s#%d.. "
                   "(%d dropped so far)", self.target, why, len(records), records[0].init_id,
                   records[0].sequence, self.dropped)

    @property
    def buffered(self) -> int:
        """Bytes waiting on local disk for the store to come back."""
        with self._lock:
            own = self._spool.size() - self._flushed if self._spool else 0
        return own + sum(o.size() - o.start for o in self._orphans)

    # -- flushing ----------------------------------------------------------------------------

    def _report_unkeyed(self) -> None:
        """Spools of earlier versions sit in a directory named by ``target`` alone, which two
        schemas share: they cannot be told apart, so they are reported, never flushed."""
        root = self.spool_dir.parent
        old = root / hashlib.sha256(self.target.encode()).hexdigest()[:16]
        if old != self.spool_dir and old.is_dir():
            found = sorted(old.glob(f"*{_SpoolFile.SUFFIX}"))
            if found:
                _log.warning("%d spool files in %s were written by an earlier llm-init for "
                             "%s without naming a schema; they are not flushed (import their "
                             "lines by hand into the right store)", len(found), old,
                             self.target)

    def _adopt_orphans(self) -> None:
        self._report_unkeyed()
        if not self.spool_dir.is_dir():
            return
        for path in sorted(self.spool_dir.glob(f"*{_SpoolFile.SUFFIX}")):
            orphan = _SpoolFile.adopt(path)
            if orphan is None:
                continue
            if orphan.identity != self.identity:
                self._set_aside(orphan)
                continue
            _log.info("flushing %s, left by an earlier process", path)
            self._orphans.append(orphan)
        if self._orphans:
            self._start_flusher()

    def _set_aside(self, orphan: _SpoolFile) -> None:
        """Keep a spool written for another target out of this one, and say so."""
        aside = orphan.path.with_suffix(".foreign")
        with contextlib.suppress(OSError):
            orphan.path.rename(aside)
        orphan.close(remove=False)
        _log.error("spool file %s was written for %s, not for %s; it is not flushed here "
                   "(kept as %s)", orphan.path,
                   orphan.identity or "an unknown target (no header)", self.identity, aside)

    def _start_flusher(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._flush_loop, daemon=True,
                                            name="llm-init-spool-flusher")
            self._thread.start()

    def _flush_loop(self) -> None:
        delay = self._retry_s
        while not self._stop.wait(delay):
            if self.flush():
                return
            delay = min(delay * 2, self._max_retry_s)

    def flush(self) -> bool:
        """Push everything spooled to the inner store, in order; ``True`` once nothing is left
        (and appends go direct again), ``False`` if the store is still away."""
        with self._flush_lock:
            try:
                while self._orphans:
                    orphan = self._orphans[0]
                    records, _ = orphan.read(orphan.start)
                    self._push(records)
                    self._orphans.pop(0)  # before closing it: ``buffered`` sizes the list
                    orphan.remove()
                while True:
                    with self._lock:
                        if self._spool is None:
                            self._offline = False
                            return True
                        records, end = self._spool.read(self._flushed)
                        if not records:
                            self._spool.reset()
                            self._flushed = self._spool.start
                            if self._offline:
                                _log.warning("event store %s is back; buffered events flushed",
                                             self.target)
                            self._offline = False
                            return True
                    self._push(records)
                    with self._lock:
                        self._flushed = end
            except EventStoreError as exc:
                _log.debug("event store %s still unavailable: %s", self.target, exc)
                return False

    def _push(self, records: Sequence[StoredEvent]) -> None:
        for _, group in itertools.groupby(records, lambda r: r.init_id):
            batch = list(group)
            try:
                self.inner.append(batch)
            except DuplicateEventError:
                self._push_missing(batch)
            except EventStoreUnavailableError:
                raise
            except EventStoreError:
                self._push_refused(batch)

    def _push_refused(self, batch: list[StoredEvent]) -> None:
        """The store refuses ``batch`` for good (not for being away): append its records one
        by one, and for each refused one keep it aside and store an ``EventRejected`` under its
        sequence number, so the spool is never stuck behind it."""
        for r in batch:
            try:
                self.inner.append([r])
            except DuplicateEventError:
                self._push_missing([r])
            except EventStoreUnavailableError:
                raise
            except EventStoreError as exc:
                self._reject([r], f"were refused ({exc})")
                try:
                    self.inner.append([_stand_in(r, exc)])
                except EventStoreUnavailableError:
                    raise
                except EventStoreError as also:
                    _log.error("event store %s refused the record of refused event %s#%d: %s",
                               self.target, r.init_id, r.sequence, also)

    def _push_missing(self, batch: list[StoredEvent]) -> None:
        """Some of ``batch`` is stored already: skip what is identical, append the rest."""
        stored = {r.sequence: r for r in self.inner.read(
            batch[0].init_id, after=min(r.sequence for r in batch) - 1,
            upto=max(r.sequence for r in batch))}
        missing, conflicting = [], []
        for r in batch:
            have = stored.get(r.sequence)
            if have is None:
                missing.append(r)
            elif have != r:
                conflicting.append(r)
        if conflicting:
            self._reject(conflicting)
        if missing:
            self.inner.append(missing)

    def _reject(self, records: list[StoredEvent],
                why: str = "differ from the ones stored under the same sequence numbers") -> None:
        path = self.spool_dir / "rejected.jsonl"
        with path.open("ab") as out:
            out.write(b"".join(_line(r) for r in records))
        _log.error("%d buffered events of %s %s in %s; kept in %s", len(records),
                   records[0].init_id, why, self.target, path)

    # -- reading: straight to the inner store ------------------------------------------------

    def read(self, init_id: str, *, after: int = 0, upto: int | None = None) -> list[StoredEvent]:
        return self.inner.read(init_id, after=after, upto=upto)

    def read_decoded(self, init_id: str) -> list[Event]:
        if isinstance(self.inner, DecodingStore):
            return self.inner.read_decoded(init_id)
        return [decode(r) for r in self.inner.read(init_id)]

    def list_init_ids(self, limit: int = 50) -> list[str]:
        return self.inner.list_init_ids(limit)

    def query_initializations(self, query: InitQuery) -> list[str]:
        if not isinstance(self.inner, QueryableStore):
            raise AttributeError("query_initializations")
        return self.inner.query_initializations(query)

    def find_init_ids(self, prefix: str, limit: int = 2) -> list[str]:
        if not isinstance(self.inner, PrefixSearchStore):
            raise AttributeError("find_init_ids")
        return self.inner.find_init_ids(prefix, limit)

    def index_outcomes(self, init_ids: Sequence[str] | None = None) -> dict[str, str]:
        if not isinstance(self.inner, CheckableStore):
            raise AttributeError("index_outcomes")
        return self.inner.index_outcomes(init_ids)

    def event_init_ids(self) -> list[str]:
        if not isinstance(self.inner, CheckableStore):
            raise AttributeError("event_init_ids")
        return self.inner.event_init_ids()

    def query_durations(self, query: InitQuery) -> list[tuple[str, float]]:
        if not isinstance(self.inner, QueryableStore):
            raise AttributeError("query_durations")
        return self.inner.query_durations(query)

    def watch(self) -> ChangeFeed:
        if not isinstance(self.inner, WatchableStore):
            raise AttributeError("watch")
        return self.inner.watch()

    def close(self, timeout: float = 5.0) -> None:
        """Try once more to flush (for at most about ``timeout`` s), stop the flusher and
        close; what could not be flushed stays on disk for the next process to adopt."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.flush()
        with self._lock:
            if self._spool is not None:
                self._spool.close(remove=self._spool.size() == self._flushed)
                self._spool = None
            for orphan in self._orphans:
                orphan.close(remove=False)
        self.inner.close()


def _stand_in(r: StoredEvent, exc: Exception) -> StoredEvent:
    """The ``EventRejected`` stored in place of ``r``, which the store refused."""
    return encode(EventRejected(
        init_id=r.init_id, sequence=r.sequence, timestamp=datetime.fromisoformat(r.timestamp),
        rejected_type=r.topic, error_type=type(exc).__name__,
        message=exception_message(exc)[:2000]))


def _line(r: StoredEvent) -> bytes:
    fields = [r.init_id, r.sequence, r.topic, r.schema_version, r.timestamp, r.state]
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def _header(identity: str) -> bytes:
    return json.dumps({"llm_init_spool": 1, "target": identity},
                      separators=(",", ":")).encode() + b"\n"


class _SpoolFile:
    """An append-only JSON-lines file of records, held with an exclusive ``flock``; its first
    line (``start`` bytes) names the target it was written for."""

    SUFFIX = ".spool"

    def __init__(self, path: Path, fd: int, identity: str | None, start: int) -> None:
        self.path = path
        self.identity = identity
        self.start = start
        self._fd = fd

    @classmethod
    def create(cls, directory: Path, identity: str) -> _SpoolFile:
        path = directory / f"{os.getpid()}-{uuid.uuid4().hex[:8]}{cls.SUFFIX}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        header = _header(identity)
        os.write(fd, header)
        return cls(path, fd, identity, len(header))

    @classmethod
    def adopt(cls, path: Path) -> _SpoolFile | None:
        """The file, if no living process holds it."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        first = os.pread(fd, 64 * 1024, 0).split(b"\n", 1)[0]
        try:
            header = json.loads(first)
        except ValueError:
            header = None
        if isinstance(header, dict) and isinstance(header.get("target"), str):
            return cls(path, fd, header["target"], len(first) + 1)
        return cls(path, fd, None, 0)  # no header: written for no known target

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def write(self, records: Sequence[StoredEvent]) -> None:
        data = b"".join(_line(r) for r in records)
        os.write(self._fd, data)  # one write with O_APPEND: no interleaving, no torn order

    def read(self, offset: int) -> tuple[list[StoredEvent], int]:
        """Whole records from ``offset`` on, and the offset after the last whole one."""
        size = self.size()
        data = os.pread(self._fd, size - offset, offset) if size > offset else b""
        end = data.rfind(b"\n") + 1
        records = []
        for line in data[:end].splitlines():
            try:
                init_id, sequence, topic, version, timestamp, state = json.loads(line)
            except ValueError:
                _log.warning("skipping a torn line in %s", self.path)
                continue
            records.append(StoredEvent(init_id, sequence, topic, version, timestamp, state))
        return records, offset + end

    def reset(self) -> None:
        os.ftruncate(self._fd, self.start)

    def remove(self) -> None:
        self.close(remove=True)

    def close(self, *, remove: bool) -> None:
        if remove:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        with contextlib.suppress(OSError):
            os.close(self._fd)
