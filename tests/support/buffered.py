"""Helpers for tests of the buffered (spooling) PostgreSQL store."""

from __future__ import annotations

import time
from pathlib import Path

from llm_init.stores import BufferedEventStore, StoredEvent, open_store
from llm_init.stores.buffered import _header, _line
from llm_init.stores.postgres import PostgresEventStore


def buffered(url: str) -> BufferedEventStore:
    store = open_store(url)
    assert isinstance(store, BufferedEventStore)
    return store


def wait_flushed(store: BufferedEventStore, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while store.buffered or store._offline:
        assert time.monotonic() < deadline, "the spool was not flushed in time"
        time.sleep(0.05)


def stored(url: str, init_id: str) -> list[StoredEvent]:
    reader = PostgresEventStore(url, create=False)
    try:
        return reader.read(init_id)
    finally:
        reader.close()


def orphan_spool(spool_dir: Path, target: str, lines: list[StoredEvent]) -> Path:
    """A spool file as a dead process would leave it for ``target``."""
    probe = buffered(target)
    probe.spool_dir.mkdir(parents=True, exist_ok=True)
    path = probe.spool_dir / "12345-dead.spool"
    path.write_bytes(_header(probe.identity) + b"".join(_line(r) for r in lines))
    probe.close()
    return path
