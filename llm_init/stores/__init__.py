"""Event stores: in-memory, SQLite and PostgreSQL behind one protocol, opened from a URL."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from llm_init.errors import EventStoreError
from llm_init.stores.append import append_next
from llm_init.stores.base import (
    OUTCOMES,
    ChangeFeed,
    CheckableStore,
    DecodingStore,
    EventStore,
    InitQuery,
    Outcome,
    PrefixSearchStore,
    QueryableStore,
    WatchableStore,
)
from llm_init.stores.buffered import SPOOL_ENV_VAR, BufferedEventStore
from llm_init.stores.codec import StoredEvent, decode, decode_rows, encode
from llm_init.stores.memory import InMemoryEventStore
from llm_init.stores.sqlite import SQLiteEventStore

if TYPE_CHECKING:
    from llm_init.stores.postgres import PostgresEventStore

__all__ = [
    "DEFAULT_STORE_PATH",
    "OUTCOMES",
    "SPOOL_ENV_VAR",
    "STORE_ENV_VAR",
    "BufferedEventStore",
    "ChangeFeed",
    "CheckableStore",
    "DecodingStore",
    "EventStore",
    "InMemoryEventStore",
    "InitQuery",
    "Outcome",
    "PostgresEventStore",
    "PrefixSearchStore",
    "QueryableStore",
    "SQLiteEventStore",
    "StoredEvent",
    "WatchableStore",
    "append_next",
    "decode",
    "decode_rows",
    "encode",
    "open_store",
]

STORE_ENV_VAR = "LLM_INIT_EVENT_STORE"
DEFAULT_STORE_PATH = os.path.join(".llm-init", "events.sqlite")
_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SUPPORTED_SCHEMES = ("sqlite://", "postgresql://", "postgres://", "memory://")
# What a URL's scheme looks like (RFC 3986); a Windows drive (C:\) has no "//".
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_store(location: str | None = None, *, create: bool = True,
               buffered: bool | None = None) -> EventStore:
    """Open ``memory://``, ``sqlite:///path``, a plain file path or ``postgresql://...``;
    ``None`` reads ``LLM_INIT_EVENT_STORE`` and falls back to ``.llm-init/events.sqlite``.

    A PostgreSQL store opened to write (``create=True``) is buffered by default: it connects
    on first use and keeps appends on local disk while the database is unreachable (see
    ``BufferedEventStore``). Readers (``create=False``) connect at once and see errors.
    """
    location = location or os.environ.get(STORE_ENV_VAR) or DEFAULT_STORE_PATH
    _check_scheme(location)
    if location == "memory://":
        return InMemoryEventStore()
    if location.startswith(_POSTGRES_SCHEMES):
        from llm_init.stores.postgres import PostgresEventStore  # psycopg is optional

        if buffered if buffered is not None else create:
            inner = PostgresEventStore(location, create=create, connect=False)
            return BufferedEventStore(inner, target=inner.target.display,
                                      identity=inner.target.identity)
        return PostgresEventStore(location, create=create)
    if location.startswith("sqlite://"):
        location = location.removeprefix("sqlite://")
    return SQLiteEventStore(location, create=create)


def _check_scheme(location: str) -> None:
    """A ``scheme://`` this function does not open is a typo, never a relative file path
    (a writer would silently record into ``./mysql:/host/db``)."""
    found = _SCHEME.match(location)
    if found is None:
        return
    scheme = f"{found.group(1).lower()}://"
    supported = ", ".join(SUPPORTED_SCHEMES)
    if scheme not in SUPPORTED_SCHEMES:
        # Only the scheme is quoted: the rest of a URL may hold a password.
        raise EventStoreError(f"unknown event store scheme {scheme!r}; supported: {supported}, "
                              "or a plain file path")
    if scheme == "memory://" and location != "memory://":
        raise EventStoreError("the memory:// event store takes nothing after its scheme")
    if not location.startswith(scheme):  # POSTGRESQL://, SQLITE://: the openers match case
        raise EventStoreError(f"write the event store scheme in lower case: {scheme!r}")


def __getattr__(name: str) -> object:
    if name == "PostgresEventStore":
        from llm_init.stores.postgres import PostgresEventStore

        return PostgresEventStore
    raise AttributeError(name)
