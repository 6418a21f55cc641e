"""The SQLite store's schema moves forward by numbered steps, each in one transaction."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from llm_init.errors import EventStoreError
from llm_init.stores import InitQuery, SQLiteEventStore
from llm_init.stores.index import index_rows
from llm_init.stores.sqlite import (
    _CREATOR_WAIT_S,
    _UPSERT_V2,
    _V1,
    SCHEMA_VERSION,
    _script,
    _v2,
)
from tests.stores.contract import at, beating_records
from tests.support.logs import records, synthetic_log


def test_a_version_1_file_is_migrated_and_its_index_filled(tmp_path: Path) -> None:
    """A file written by the first schema opens at the current version, and fleet queries
    see the inits it already held."""
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(_V1)
    for log in (records(synthetic_log("done")), records(synthetic_log("broke", outcome="failed"))):
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
                         [(r.init_id, r.sequence, r.topic, r.schema_version, r.timestamp, r.state)
                          for r in log])
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = SQLiteEventStore(path, create=False)
    assert store.query_initializations(InitQuery(outcome="failed")) == ["broke"]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def test_a_version_2_file_gains_the_heartbeat_bound_and_keeps_its_running_inits(
        tmp_path: Path) -> None:
    """A file of schema version 2 opens at the current version: its unfinished init (from
    before heartbeats) still reads running, and a heartbeat-declaring init is judged by it."""
    path = tmp_path / "v2.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    _script(conn, _V1)
    _v2(conn)
    conn.execute("PRAGMA user_version = 2")
    old = store_version_2_init(conn)
    conn.close()
    store = SQLiteEventStore(path, create=False)
    store.append(beating_records("new", 5.0, beat_after_s=10.0))
    assert store.query_initializations(InitQuery(outcome="running", now=at(3600.0))) == [old]
    assert store.query_initializations(InitQuery(outcome="abandoned", now=at(3600.0))) == [
        "new"]
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)


def store_version_2_init(conn: sqlite3.Connection) -> str:
    """Append an unfinished init as schema version 2 stored it (events and index row)."""
    log = records(synthetic_log("old", outcome="running"))
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
                     [(r.init_id, r.sequence, r.topic, r.schema_version, r.timestamp, r.state)
                      for r in log])
    conn.executemany(_UPSERT_V2, [row.as_params() for row in index_rows(log)])
    return "old"


def test_a_reader_waits_for_a_store_another_process_is_creating(tmp_path: Path) -> None:
    """A file whose creator has connected but not yet written the schema opens for a reader
    once the creator's schema lands, instead of being called foreign."""
    path = tmp_path / "events.sqlite"
    sqlite3.connect(path).close()  # the creator's first connect: a file with no schema yet

    def create_later() -> None:
        time.sleep(0.3)
        SQLiteEventStore(path).close()

    creator = threading.Thread(target=create_later)
    creator.start()
    try:
        reader = SQLiteEventStore(path, create=False)
    finally:
        creator.join()
    assert reader.list_init_ids() == []
    reader.close()


def test_a_foreign_sqlite_file_is_refused_at_once(tmp_path: Path) -> None:
    """A SQLite file that holds another program's tables is not an event store, and saying so
    does not wait."""
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    started = time.monotonic()
    with pytest.raises(EventStoreError, match="is not an llm-init event store"):
        SQLiteEventStore(path, create=False)
    assert time.monotonic() - started < _CREATOR_WAIT_S / 2
