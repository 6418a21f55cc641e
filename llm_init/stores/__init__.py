"""Event stores: in-memory and SQLite, behind one protocol, opened from a URL or a path."""

from __future__ import annotations

import os

from llm_init.stores.base import EventStore, StoredEvent, decode, encode
from llm_init.stores.memory import InMemoryEventStore
from llm_init.stores.sqlite import SQLiteEventStore

__all__ = [
    "DEFAULT_STORE_PATH",
    "STORE_ENV_VAR",
    "EventStore",
    "InMemoryEventStore",
    "SQLiteEventStore",
    "StoredEvent",
    "decode",
    "encode",
    "open_store",
]

STORE_ENV_VAR = "LLM_INIT_EVENT_STORE"
DEFAULT_STORE_PATH = os.path.join(".llm-init", "events.sqlite")


def open_store(location: str | None = None, *, create: bool = True) -> EventStore:
    """Open ``memory://``, ``sqlite:///path`` or a plain file path; ``None`` reads
    ``LLM_INIT_EVENT_STORE`` and falls back to ``.llm-init/events.sqlite``."""
    location = location or os.environ.get(STORE_ENV_VAR) or DEFAULT_STORE_PATH
    if location == "memory://":
        return InMemoryEventStore()
    if location.startswith("sqlite://"):
        location = location.removeprefix("sqlite://")
    return SQLiteEventStore(location, create=create)
