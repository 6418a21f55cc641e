"""Spools of different PostgreSQL targets stay apart: two schemas of one database never share
a spool, and a spool file is only ever flushed into the target it was written for."""

from __future__ import annotations

import hashlib
import logging
import uuid
from pathlib import Path

import psycopg
import pytest

from llm_init.stores import BufferedEventStore, StoredEvent, open_store
from llm_init.stores.buffered import _line
from llm_init.stores.postgres import PostgresEventStore
from tests.support.buffered import buffered, stored, wait_flushed
from tests.support.logs import records, synthetic_log
from tests.support.postgres import StoppablePostgres, with_param


@pytest.fixture(autouse=True)
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLM_INIT_SPOOL_DIR", str(tmp_path / "spool"))
    return tmp_path / "spool"


@pytest.fixture
def other_schema(own_postgres: StoppablePostgres) -> str:
    """A second schema with an event log, on the same server and database as
    ``own_postgres``; its URL differs from that one only in ``options``."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(own_postgres.server.url(), autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
    url = with_param(own_postgres.server.url(), "options", f"-csearch_path={name}")
    PostgresEventStore(url).close()  # the tables, so it can be read back
    return url


def spool_during_outage(own_postgres: StoppablePostgres, log: list[StoredEvent]
                        ) -> BufferedEventStore:
    """Appends ``log`` to the first schema while the server is down and closes the store
    there: its events stay in a spool file on disk, as a replica that died would leave it."""
    PostgresEventStore(own_postgres.url()).close()
    own_postgres.stop()
    writer = buffered(own_postgres.url())
    writer.append(log)
    writer.close(timeout=1.0)
    own_postgres.start()
    return writer


def test_a_store_of_another_schema_never_flushes_its_spool(own_postgres: StoppablePostgres,
                                                           other_schema: str) -> None:
    """Events spooled for one schema are not flushed by a store of a second schema of the
    same database; they arrive in their own schema when a store of it opens."""
    log = records(synthetic_log("x"))
    spool_during_outage(own_postgres, log)
    other = buffered(other_schema)
    wait_flushed(other)
    other.close()
    own = buffered(own_postgres.url())
    wait_flushed(own)
    own.close()
    assert (stored(other_schema, "x"), stored(own_postgres.url(), "x")) == ([], log)


def test_a_spool_file_written_for_another_target_is_set_aside(
        own_postgres: StoppablePostgres, other_schema: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """A spool file moved into another target's spool directory is not flushed there: it is
    renamed ``.foreign`` and an error names both targets."""
    log = records(synthetic_log("x"))
    writer = spool_during_outage(own_postgres, log)
    probe = buffered(other_schema)
    probe.close()
    probe.spool_dir.mkdir(parents=True, exist_ok=True)
    [spooled] = writer.spool_dir.glob("*.spool")
    moved = spooled.rename(probe.spool_dir / spooled.name)
    with caplog.at_level(logging.ERROR, logger="llm_init.stores.buffered"):
        other = buffered(other_schema)
        wait_flushed(other)
        other.close()
    assert stored(other_schema, "x") == []
    assert moved.with_suffix(".foreign").exists()
    assert any("was written for" in r.getMessage() and other.identity in r.getMessage()
               for r in caplog.records)


def test_urls_differing_only_in_search_path_get_their_own_spools(
        own_postgres: StoppablePostgres, other_schema: str) -> None:
    """The spool directory follows the schema search path, and not settings such as the
    connect timeout."""
    a, b = buffered(own_postgres.url()), buffered(other_schema)
    same = buffered(with_param(own_postgres.url(), "connect_timeout", "9"))
    try:
        assert (a.spool_dir != b.spool_dir, a.spool_dir == same.spool_dir) == (True, True)
    finally:
        for store in (a, b, same):
            store.close()


def test_open_store_keys_the_spool_by_the_identity_without_the_password() -> None:
    """The identity names server, port, database, role and search path, never a password."""
    store = open_store("postgresql://u:secret@db.internal:6543/logs?options=-csearch_path%3Dprod")
    assert isinstance(store, BufferedEventStore)
    try:
        assert store.identity == ('postgresql {"dbname":"logs","host":"db.internal",'
                                  '"port":"6543","search_path":"prod","user":"u"}')
    finally:
        store.close(timeout=0.1)


def test_a_spool_of_an_earlier_version_is_reported_not_flushed(
        postgres_url: str, spool_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A spool file in the directory earlier versions named by host and database alone
    (shared by every schema) is reported with a warning, and its events are not flushed."""
    PostgresEventStore(postgres_url).close()  # the tables, so it can be read back
    display = PostgresEventStore(postgres_url, connect=False).target.display
    old = spool_dir / hashlib.sha256(display.encode()).hexdigest()[:16]
    old.mkdir(parents=True)
    (old / "1-dead.spool").write_bytes(b"".join(_line(r) for r in records(synthetic_log("x"))))
    with caplog.at_level(logging.WARNING, logger="llm_init.stores.buffered"):
        store = buffered(postgres_url)
        wait_flushed(store)
        store.close()
    assert stored(postgres_url, "x") == []
    assert any("1 spool files in" in r.getMessage() for r in caplog.records)
