"""What the PostgreSQL store adds to the contract: a versioned schema, passwords kept out of
URLs and messages, and a change feed that is pushed, not polled."""

from __future__ import annotations

import os
import threading

import psycopg
import pytest

from llm_init import EventStoreError
from llm_init.errors import EventStoreUnavailableError
from llm_init.stores import InitQuery
from llm_init.stores.postgres import (
    INDEX,
    LEDGER,
    NOTIFY_CHANNEL,
    SCHEMA_VERSION,
    PostgresEventStore,
)
from tests.stores.contract import at, beating_records
from tests.support.logs import records, synthetic_log
from tests.support.postgres import with_param


def ledger(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(f"SELECT version FROM {LEDGER} ORDER BY 1")]


def test_first_use_creates_the_schema_and_records_its_version(postgres_url: str) -> None:
    """Opening an empty database migrates it and writes each applied version to the ledger."""
    PostgresEventStore(postgres_url).close()
    assert ledger(postgres_url) == list(range(1, SCHEMA_VERSION + 1))


def test_replicas_opening_a_fresh_database_at_once_migrate_it_once(postgres_url: str) -> None:
    """Eight stores connecting to one fresh database at the same moment all succeed, and
    each schema version is applied exactly once."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def open_one() -> None:
        barrier.wait()
        try:
            PostgresEventStore(postgres_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert ledger(postgres_url) == list(range(1, SCHEMA_VERSION + 1))


def test_a_newer_schema_is_refused_with_both_versions(postgres_url: str) -> None:
    """A database migrated by a newer llm-init is not written by an older one."""
    PostgresEventStore(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {LEDGER} (version, description) VALUES (99, 'future')")
    with pytest.raises(EventStoreError, match=f"version 99.*knows up to {SCHEMA_VERSION}"):
        PostgresEventStore(postgres_url)


def test_reading_a_database_without_a_log_fails_without_creating_one(postgres_url: str) -> None:
    """``create=False`` (what the CLI uses) reports an empty database and leaves it empty."""
    with pytest.raises(EventStoreError, match="holds no llm-init event log"):
        PostgresEventStore(postgres_url, create=False)
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT to_regclass(%s)", (LEDGER,)).fetchone() == (None,)


def test_password_can_come_from_a_named_environment_variable(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``?password_env=NAME`` reads the password from $NAME when PGPASSWORD is not set."""
    monkeypatch.setenv("EVENTS_DB_PASSWORD", os.environ["PGPASSWORD"])
    monkeypatch.delenv("PGPASSWORD")
    store = PostgresEventStore(with_param(postgres_url, "password_env", "EVENTS_DB_PASSWORD"))
    store.append(records(synthetic_log("x"))[:1])
    assert len(store.read("x")) == 1


def test_a_missing_password_variable_is_named_in_the_error(postgres_url: str) -> None:
    """An unset ``password_env`` variable fails with its name, before connecting."""
    with pytest.raises(EventStoreError, match=r"\$NOT_SET_ANYWHERE"):
        PostgresEventStore(with_param(postgres_url, "password_env", "NOT_SET_ANYWHERE"))


def test_errors_never_show_a_password_given_in_the_url() -> None:
    """An unreachable store's error names host and database but not the URL's password."""
    with pytest.raises(EventStoreUnavailableError) as caught:
        PostgresEventStore("postgresql://me:hunter2secret@127.0.0.1:1/events")
    assert "127.0.0.1" in str(caught.value)
    assert "hunter2secret" not in str(caught.value)


def test_the_change_feed_is_pushed_not_polled(postgres_url: str) -> None:
    """A feed woken by an append has sent no query since its LISTEN: NOTIFY woke it."""
    store = PostgresEventStore(postgres_url)
    feed = store.watch()
    store.append(records(synthetic_log("x"))[:1])
    assert feed.wait(5.0) is True
    assert feed.wait(0.2) is False
    with psycopg.connect(postgres_url) as conn:
        queries = conn.execute("SELECT query FROM pg_stat_activity WHERE query LIKE 'LISTEN%' "
                               "AND pid <> pg_backend_pid()").fetchall()
    feed.close()
    store.close()
    assert queries == [(f"LISTEN {NOTIFY_CHANNEL}",)]


def test_a_version_1_database_gains_the_heartbeat_bound(postgres_url: str) -> None:
    """A database at schema version 1 (no ``alive_until``) is migrated on open: its
    unfinished init from before heartbeats stays running, a heartbeat-declaring one is judged
    by its bound."""
    store = PostgresEventStore(postgres_url)
    store.append(records(synthetic_log("old", outcome="running")))
    store.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {INDEX} DROP COLUMN alive_until")
        conn.execute(f"DELETE FROM {LEDGER} WHERE version > 1")
    store = PostgresEventStore(postgres_url)
    try:
        store.append(beating_records("new", 5.0, beat_after_s=10.0))
        assert store.query_initializations(InitQuery(outcome="running", now=at(3600.0))) == [
            "old"]
        assert store.query_initializations(InitQuery(outcome="abandoned", now=at(3600.0))) \
            == ["new"]
    finally:
        store.close()
    assert ledger(postgres_url) == list(range(1, SCHEMA_VERSION + 1))
