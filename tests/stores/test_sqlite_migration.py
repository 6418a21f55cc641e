"""The SQLite store's schema moves forward by numbered steps, each in one transaction."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from llm_init.stores import InitQuery, SQLiteEventStore
from llm_init.stores.sqlite import _V1, SCHEMA_VERSION
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
