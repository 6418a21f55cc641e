"""The store contract, run against the in-memory, SQLite and PostgreSQL stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stores.contract import MemoryContract, StoreContract


class TestInMemoryStore(MemoryContract):
    """The in-memory store meets the contract (threads stand in for processes)."""


class TestSQLiteStore(StoreContract):
    """The SQLite store meets the contract."""

    @pytest.fixture
    def location(self, tmp_path: Path) -> str:
        return f"sqlite://{tmp_path / 'events.sqlite'}"


class TestPostgresStore(StoreContract):
    """The PostgreSQL store meets the contract."""

    @pytest.fixture
    def location(self, postgres_url: str) -> str:
        return postgres_url
