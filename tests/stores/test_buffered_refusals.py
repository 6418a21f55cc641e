"""The spool waits out a database that is away, never one that refuses: a refused record is
set aside and the records behind it still arrive."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from llm_init.stores import BufferedEventStore, open_store
from tests.support.buffered import orphan_spool
from tests.support.logs import records, synthetic_log
from tests.support.postgres_roles import read_only_role


@pytest.fixture
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLM_INIT_SPOOL_DIR", str(tmp_path / "spool"))
    return tmp_path / "spool"


def test_spooled_records_the_database_refuses_are_set_aside_not_retried(
        postgres_url: str, spool_dir: Path) -> None:
    """A spool left behind whose records the database refuses (no INSERT granted) is emptied
    into rejected.jsonl in one pass instead of being retried forever."""
    log = records(synthetic_log("x"))[:3]
    with read_only_role(postgres_url) as reader_url:
        orphan = orphan_spool(spool_dir, reader_url, log)
        store = open_store(reader_url)
        assert isinstance(store, BufferedEventStore)
        try:
            started = time.monotonic()
            assert store.flush()
            assert time.monotonic() - started < 30
            assert store.buffered == 0
        finally:
            store.close()
    rejected = (orphan.parent / "rejected.jsonl").read_bytes().splitlines()
    assert len(rejected) == len(log)
    assert not orphan.exists()
