"""The embedded default store: one SQLite file in WAL mode, safe for several processes."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from llm_init.errors import DuplicateEventError, EventStoreError
from llm_init.stores.base import StoredEvent

# Migrations by schema version (PRAGMA user_version): entry N brings a version N-1 file to N.
_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE events (
            init_id TEXT NOT NULL,
            sequence INTEGER NOT NULL,
            topic TEXT NOT NULL,
            schema_version INTEGER NOT NULL,
            timestamp TEXT NOT NULL,
            state TEXT NOT NULL,
            PRIMARY KEY (init_id, sequence)
        ) WITHOUT ROWID""",
        "CREATE INDEX events_by_topic_time ON events (topic, timestamp)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


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
        try:
            self._conn = sqlite3.connect(self.path, timeout=busy_timeout_s,
                                         isolation_level=None, check_same_thread=False)
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
            self._migrate(create)
        except sqlite3.DatabaseError as exc:
            raise EventStoreError(f"{self.path} is not a usable llm-init event store: {exc}") \
                from exc

    def _migrate(self, create: bool) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise EventStoreError(
                f"{self.path} has schema version {version}; this llm-init knows {SCHEMA_VERSION}"
            )
        if version == SCHEMA_VERSION:
            return
        if not create:
            raise EventStoreError(f"{self.path} is not an llm-init event store")
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated while we waited for the write lock.
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            for statements in _MIGRATIONS[version:]:
                for statement in statements:
                    self._conn.execute(statement)
            self._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def append(self, records: Sequence[StoredEvent]) -> None:
        if not records:
            return
        rows = [(r.init_id, r.sequence, r.topic, r.schema_version, r.timestamp, r.state)
                for r in records]
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows)
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
                raise EventStoreError(f"cannot append to {self.path}: {exc}") from exc

    def read(self, init_id: str, *, after: int = 0, upto: int | None = None) -> list[StoredEvent]:
        query = ("SELECT init_id, sequence, topic, schema_version, timestamp, state FROM events "
                 "WHERE init_id = ? AND sequence > ? AND sequence <= ? ORDER BY sequence")
        with self._lock:
            try:
                rows = self._conn.execute(query, (init_id, after, upto or 2**62)).fetchall()
            except sqlite3.Error as exc:
                raise EventStoreError(f"cannot read {self.path}: {exc}") from exc
        return [StoredEvent(*row) for row in rows]

    def list_init_ids(self, limit: int = 50) -> list[str]:
        query = ("SELECT init_id FROM events WHERE topic = 'InitializationStarted' "
                 "ORDER BY timestamp DESC LIMIT ?")
        with self._lock:
            try:
                return [row[0] for row in self._conn.execute(query, (limit,))]
            except sqlite3.Error as exc:
                raise EventStoreError(f"cannot read {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()
