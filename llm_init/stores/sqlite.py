"""The embedded default store: one SQLite file in WAL mode, safe for several processes."""

from __future__ import annotations

import itertools
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llm_init.errors import DuplicateEventError, EventStoreError, EventStoreUnavailableError
from llm_init.events import Event
from llm_init.stores.base import InitQuery
from llm_init.stores.codec import StoredEvent, decode_rows
from llm_init.stores.index import DURATION_TOPICS, TOTAL, index_rows
from llm_init.stores.sql import INDEX_COLUMNS, index_upsert, order_by, prefix_upper, where

_EVENT_COLUMNS = "init_id, sequence, topic, schema_version, timestamp, state"
_ROW = operator.attrgetter(*_EVENT_COLUMNS.split(", "))  # a record as the row it inserts
# Without the init id, which the caller has: one text value less to build per row.
_BUSY_CODES = (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED (primary codes of the extended ones)
_READ_ROWS = ("SELECT sequence, topic, schema_version, timestamp, state FROM events "
              "WHERE init_id = ? ORDER BY sequence")
_V1 = """
CREATE TABLE events (
    init_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    topic TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    timestamp TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (init_id, sequence)
) WITHOUT ROWID;
CREATE INDEX events_by_topic_time ON events (topic, timestamp);
"""
_V2 = """
CREATE TABLE initializations (
    init_id TEXT PRIMARY KEY,
    model_id TEXT,
    started_at TEXT,
    host TEXT,
    node_id TEXT,
    application TEXT,
    deployment TEXT,
    labels TEXT,
    outcome TEXT NOT NULL,
    duration_s REAL
) WITHOUT ROWID;
CREATE INDEX initializations_by_start ON initializations (started_at);
CREATE INDEX initializations_by_model ON initializations (model_id, started_at);
CREATE INDEX initializations_running ON initializations (started_at) WHERE outcome = 'running';
DROP INDEX events_by_topic_time
"""
_V3 = "ALTER TABLE initializations ADD COLUMN alive_until TEXT"
_UPSERT = index_upsert("initializations", lambda name: f":{name}")
_UPSERT_V2 = index_upsert("initializations", lambda name: f":{name}", INDEX_COLUMNS[:10])


def _script(conn: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits the open transaction first, and a migration is atomic.
    for statement in filter(str.strip, script.split(";")):
        conn.execute(statement)


def _v1(conn: sqlite3.Connection) -> None:
    _script(conn, _V1)


def _v2(conn: sqlite3.Connection) -> None:
    _script(conn, _V2)
    rows = conn.execute(f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY init_id, sequence")
    for _, group in itertools.groupby((StoredEvent(*r) for r in rows.fetchall()),
                                      lambda r: r.init_id):
        # Version 2's columns: later steps add theirs (and fill them) themselves.
        conn.executemany(_UPSERT_V2, [row.as_params() for row in index_rows(list(group))])


def _v3(conn: sqlite3.Connection) -> None:
    # Logs from before heartbeats declare none, so no row has a bound to fill in.
    _script(conn, _V3)


# (version, what it does, how): applied in order, in the transaction that sets
# ``PRAGMA user_version``. Append new steps; never edit a released one.
MIGRATIONS: tuple[tuple[int, str, Callable[[sqlite3.Connection], None]], ...] = (
    (1, "the events table", _v1),
    (2, "the per-initialization index, filled from the events; fleet queries use it, so the "
        "(topic, timestamp) index, costly to keep up on append, goes", _v2),
    (3, "the index's alive_until: the last heartbeat plus the abandonment bound", _v3),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]
# How long a reader waits for a writer that has made the file but not yet its schema.
_CREATOR_WAIT_S = 5.0


class SQLiteEventStore:
    """Append-only events in one SQLite file.

    ``durable=True`` fsyncs every append (survives power loss); the default WAL with
    ``synchronous=NORMAL`` survives a killed process, which is the failure replicas meet.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True,
                 durable: bool = False, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise EventStoreError(f"no event store at {self.path}")
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._busy_timeout_s = busy_timeout_s
        try:
            self._conn = _connect(self.path, busy_timeout_s)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._migrate(create)
        except sqlite3.DatabaseError as exc:
            raise EventStoreError(f"{self.path} is not a usable llm-init event store: {exc}") \
                from exc

    def _await_creator(self) -> int:
        """The schema version once a process that is creating this file has committed it.

        A writer's first connect makes the file before its schema exists, so a reader (a
        status poll, ``llm-init timeline``) that opens it in that window sees version 0 with
        no tables: wait for the creator's schema (its write lock, then a short poll) rather
        than call a store being born foreign. A file that holds other tables is foreign at once.
        """
        deadline = time.monotonic() + min(self._busy_timeout_s, _CREATOR_WAIT_S)
        while True:
            tables = self._conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            if version or tables or time.monotonic() >= deadline:
                return version
            time.sleep(0.05)

    def _migrate(self, create: bool) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise EventStoreError(
                f"{self.path} has schema version {version}; this llm-init knows {SCHEMA_VERSION}"
            )
        if version == SCHEMA_VERSION:
            return
        if version == 0 and not create:
            version = self._await_creator()
            if version == SCHEMA_VERSION:
                return
            if version == 0:
                raise EventStoreError(f"{self.path} is not an llm-init event store")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while this one waited for the write lock.
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            for step, _, apply in MIGRATIONS:
                if step > version:
                    apply(self._conn)
                    self._conn.execute(f"PRAGMA user_version = {step}")
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def append(self, records: Sequence[StoredEvent]) -> None:
        if not records:
            return
        rows = list(map(_ROW, records))
        index = [row.as_params() for row in index_rows(records)]
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
                self._conn.executemany(_UPSERT, index)
                self._conn.execute("COMMIT")
            except sqlite3.IntegrityError as exc:
                self._conn.execute("ROLLBACK")
                first = records[0]
                raise DuplicateEventError(
                    f"event {first.init_id}#{first.sequence}..{records[-1].sequence} collides "
                    f"with one already recorded in {self.path}"
                ) from exc
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                # Busy past the timeout: the same append may succeed later (the recorder keeps
                # it pending); anything else is a refusal it must not retry forever.
                busy = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in _BUSY_CODES
                error = EventStoreUnavailableError if busy else EventStoreError
                raise error(f"cannot append to {self.path}: {exc}") from exc

    def read(self, init_id: str, *, after: int = 0, upto: int | None = None) -> list[StoredEvent]:
        query = (f"SELECT {_EVENT_COLUMNS} FROM events "
                 "WHERE init_id = ? AND sequence > ? AND sequence <= ? ORDER BY sequence")
        rows = self._fetch(query, (init_id, after, 2**62 if upto is None else upto))
        return [StoredEvent(*row) for row in rows]

    def read_decoded(self, init_id: str) -> list[Event]:
        return decode_rows(init_id, self._fetch(_READ_ROWS, (init_id,)))

    def list_init_ids(self, limit: int = 50) -> list[str]:
        return self.query_initializations(InitQuery(limit=limit))

    def query_initializations(self, query: InitQuery) -> list[str]:
        clause, params = where(query, lambda name: f":{name}", _label_match)
        sql = f"SELECT i.init_id FROM initializations i WHERE {clause} {order_by(query)}"
        if query.limit is not None:
            sql += " LIMIT :limit"
            params["limit"] = query.limit
        return [row[0] for row in self._fetch(sql, params)]

    def query_durations(self, query: InitQuery) -> list[tuple[str, float]]:
        clause, params = where(query, lambda name: f":{name}", _label_match)
        sql = (f"SELECT CASE e.topic WHEN 'PhaseCompleted' THEN json_extract(e.state, '$.phase') "
               f"ELSE '{TOTAL}' END, json_extract(e.state, '$.duration_s') "
               "FROM initializations i JOIN events e ON e.init_id = i.init_id "
               f"WHERE e.topic IN {DURATION_TOPICS!r} AND {clause}")
        return [(phase, float(d)) for phase, d in self._fetch(sql, params)]

    def find_init_ids(self, prefix: str, limit: int = 2) -> list[str]:
        # A range on the index table's primary key (text compares bytewise): a seek, not a
        # scan, however many initializations there are.
        upper = prefix_upper(prefix)
        sql = "SELECT init_id FROM initializations WHERE init_id >= ?"
        params: list[object] = [prefix]
        if upper is not None:
            sql += " AND init_id < ?"
            params.append(upper)
        params.append(limit)
        rows = self._fetch(sql + " ORDER BY init_id LIMIT ?", params)
        return [row[0] for row in rows if row[0].startswith(prefix)]

    # -- for ``llm-init check`` (llm_init.stores.check) ------------------------------------

    def index_outcomes(self, init_ids: Sequence[str] | None = None) -> dict[str, str]:
        if init_ids is None:
            rows = self._fetch("SELECT init_id, outcome FROM initializations", ())
        else:
            marks = ", ".join("?" * len(init_ids))
            rows = self._fetch(f"SELECT init_id, outcome FROM initializations "
                               f"WHERE init_id IN ({marks})", list(init_ids))
        return {init_id: outcome for init_id, outcome in rows}

    def event_init_ids(self) -> list[str]:
        return [row[0] for row in self._fetch(
            "SELECT DISTINCT init_id FROM events ORDER BY init_id", ())]

    def integrity_problems(self) -> list[str]:
        """What ``PRAGMA integrity_check`` finds in the file (nothing when it says ok)."""
        try:
            found = [row[0] for row in self._fetch("PRAGMA integrity_check", ())]
        except EventStoreError as exc:
            return [f"PRAGMA integrity_check could not finish: {exc}"]
        return [] if found == ["ok"] else [f"{self.path}: {line}" for line in found]

    def watch(self) -> _DataVersionFeed:
        try:
            return _DataVersionFeed(_connect(self.path, self._busy_timeout_s))
        except sqlite3.Error as exc:
            raise EventStoreError(f"cannot watch {self.path}: {exc}") from exc

    def _fetch(self, sql: str, params: Sequence[object] | dict[str, object]
               ) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise EventStoreError(f"cannot read {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=busy_timeout_s, isolation_level=None,
                           check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    return conn


def _label_match(key: str, value: str) -> str:
    return f"EXISTS (SELECT 1 FROM json_each(i.labels) WHERE key = {key} AND value = {value})"


class _DataVersionFeed:
    """SQLite has no push: poll ``PRAGMA data_version`` (one integer, no table read), which
    changes whenever another connection commits, every ``interval`` seconds."""

    interval = 0.25

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._seen = self._version()

    def _version(self) -> int:
        version: int = self._conn.execute("PRAGMA data_version").fetchone()[0]
        return version

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            version = self._version()
            if version != self._seen:
                self._seen = version
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            time.sleep(min(self.interval, left))

    def close(self) -> None:
        self._conn.close()
