"""One event log for a fleet: PostgreSQL through psycopg 3, with LISTEN/NOTIFY for followers.

Open it with a libpq URL, ``postgresql://user@host:5432/db``. The password never belongs in the
URL (the URL travels in ``runtime_env`` and is shown in messages): libpq reads ``PGPASSWORD`` or
``~/.pgpass`` itself, and ``?password_env=NAME`` names another environment variable to read it
from. ``connect_timeout`` defaults to 5 s and ``application_name`` to ``llm-init``.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from llm_init.errors import DuplicateEventError, EventStoreError, EventStoreUnavailableError
from llm_init.events import Event
from llm_init.stores.base import InitQuery
from llm_init.stores.codec import StoredEvent, decode_rows
from llm_init.stores.index import DURATION_TOPICS, TOTAL, index_rows
from llm_init.stores.sql import index_upsert, order_by, prefix_upper, where

SCHEMES = ("postgresql://", "postgres://")
NOTIFY_CHANNEL = "llm_init_events"
PASSWORD_ENV_PARAM = "password_env"
EVENTS = "llm_init_events"
INDEX = "llm_init_initializations"
LEDGER = "llm_init_schema"
# pg_advisory_xact_lock key serializing migrations across replicas: b"llm_init" as an int8.
_MIGRATION_LOCK = 7812739710139132276

_V1 = f"""
CREATE TABLE {EVENTS} (
    init_id text NOT NULL,
    sequence integer NOT NULL,
    topic text NOT NULL,
    schema_version integer NOT NULL,
    timestamp text NOT NULL,
    state text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (init_id, sequence)
);
CREATE INDEX {EVENTS}_by_topic ON {EVENTS} (topic, init_id);
CREATE TABLE {INDEX} (
    init_id text PRIMARY KEY,
    model_id text,
    started_at timestamptz,
    host text,
    node_id text,
    application text,
    deployment text,
    labels jsonb,
    outcome text NOT NULL,
    duration_s double precision
);
CREATE INDEX {INDEX}_by_start ON {INDEX} (started_at DESC);
CREATE INDEX {INDEX}_by_model ON {INDEX} (model_id, started_at DESC);
CREATE INDEX {INDEX}_by_duration ON {INDEX} (duration_s DESC NULLS LAST);
CREATE INDEX {INDEX}_running ON {INDEX} (started_at) WHERE outcome = 'running';
"""

# Logs from before heartbeats declare none, so no existing row has a bound to fill in.
_V2 = f"ALTER TABLE {INDEX} ADD COLUMN alive_until timestamptz"

# (version, what it does, DDL): applied in order under one advisory lock, each recorded in the
# ledger table in the same transaction. Append new steps; never edit a released one.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "events, the per-initialization index, and their indexes", _V1),
    (2, "the index's alive_until: the last heartbeat plus the abandonment bound", _V2),
)
SCHEMA_VERSION = MIGRATIONS[-1][0]

_EVENT_COLUMNS = "init_id, sequence, topic, schema_version, timestamp, state"
_INSERT = (f"INSERT INTO {EVENTS} ({_EVENT_COLUMNS}) SELECT * FROM "
           "unnest(%b::text[], %b::int[], %b::text[], %b::int[], %b::text[], %b::text[])")
_UPSERT = index_upsert(INDEX, lambda name: f"%({name})s")


@dataclass(frozen=True, slots=True)
class PostgresTarget:
    """Where to connect: libpq parameters without our own, and a password-free display name."""

    params: dict[str, str]
    display: str

    @classmethod
    def parse(cls, url: str, environ: Callable[[str], str | None] = os.environ.get
              ) -> PostgresTarget:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        ours = {k: v for k, v in query if k == PASSWORD_ENV_PARAM}
        rest = urllib.parse.urlencode([(k, v) for k, v in query if k != PASSWORD_ENV_PARAM])
        try:
            parsed = conninfo_to_dict(urllib.parse.urlunsplit(parts._replace(query=rest)))
        except psycopg.ProgrammingError as exc:
            raise EventStoreError(f"bad PostgreSQL URL for the event store: {exc}") from exc
        params = {k: str(v) for k, v in parsed.items() if v is not None}
        display = (f"postgresql://{params.get('user', '')}{'@' if 'user' in params else ''}"
                   f"{params.get('host', '')}{':' + params['port'] if 'port' in params else ''}"
                   f"/{params.get('dbname', '')}")
        if PASSWORD_ENV_PARAM in ours:
            name = ours[PASSWORD_ENV_PARAM]
            password = environ(name)
            if password is None:
                raise EventStoreError(
                    f"the event store URL {display} reads its password from ${name}, "
                    f"which is not set in this process's environment"
                )
            params["password"] = password
        params.setdefault("connect_timeout", "5")
        params.setdefault("application_name", "llm-init")
        return cls(params, display)

    @property
    def identity(self) -> str:
        """Which log this is, password-free: server, port, database, role and schema search
        path, with libpq's environment defaults filled in. URLs that differ only in other
        settings (timeouts, TLS, application name) name the same log."""
        p, env = self.params, os.environ
        user = p.get("user") or env.get("PGUSER") or getpass.getuser()
        found = {
            "host": p.get("host") or p.get("hostaddr") or env.get("PGHOST") or "",
            "port": p.get("port") or env.get("PGPORT") or "5432",
            "dbname": p.get("dbname") or env.get("PGDATABASE") or user,
            "user": user,
            "search_path": search_path(p.get("options") or env.get("PGOPTIONS") or ""),
        }
        return "postgresql " + json.dumps(found, sort_keys=True, separators=(",", ":"))


# ``-c search_path=...``, ``-csearch_path=...`` or ``--search-path=...`` in libpq ``options``,
# whose values escape spaces with a backslash.
_SEARCH_PATH = re.compile(r"(?:^|\s)(?:-c\s*|--)search[_-]path=((?:\\.|[^\s\\])*)")


def search_path(options: str) -> str:
    """The schema search path set in libpq ``options`` (the last one wins, as in the
    server), with spaces around its commas dropped; "" when it sets none."""
    found = _SEARCH_PATH.findall(options)
    if not found:
        return ""
    value = re.sub(r"\\(.)", r"\1", found[-1])
    return ",".join(part.strip() for part in value.split(","))


class PostgresEventStore:
    """Append-only events in PostgreSQL, with a per-init index row and a notification per
    append. One connection per store, used under a lock; it reconnects after a failure.

    ``connect=False`` defers the first connection (and the schema migration) to the first call,
    so a replica can open the store while the database is down.
    """

    def __init__(self, url: str, *, create: bool = True, connect: bool = True) -> None:
        self.target = PostgresTarget.parse(url)
        self._create = create
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        if connect:
            with self._connection():
                pass

    def __repr__(self) -> str:
        return f"PostgresEventStore({self.target.display!r})"

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """The live connection (made and migrated on first use), with psycopg's errors turned
        into ours; a broken connection is dropped so the next call reconnects."""
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    conn = connect(self.target)
                    try:
                        migrate(conn, self.target.display, create=self._create)
                    except BaseException:
                        conn.close()
                        raise
                    self._conn = conn
                yield self._conn
            except pg_errors.UniqueViolation as exc:
                raise DuplicateEventError(
                    f"an event collides with one already recorded in {self.target.display}: "
                    f"{exc.diag.message_detail or exc}"
                ) from exc
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._drop()
                raise EventStoreUnavailableError(
                    f"event store {self.target.display} is unreachable: {_first_line(exc)}"
                ) from exc
            except psycopg.Error as exc:
                raise EventStoreError(
                    f"event store {self.target.display} failed: {_first_line(exc)}"
                ) from exc

    def _drop(self) -> None:
        if self._conn is not None:
            with suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    def append(self, records: Sequence[StoredEvent]) -> None:
        if not records:
            return
        columns = ([r.init_id for r in records], [r.sequence for r in records],
                   [r.topic for r in records], [r.schema_version for r in records],
                   [r.timestamp for r in records], [r.state for r in records])
        index = [_without_nul(row.as_params()) for row in index_rows(records)]
        index.sort(key=lambda row: str(row["init_id"]))  # one lock order: no deadlocks
        last = records[-1]
        with self._connection() as conn, conn.transaction(), conn.cursor() as cur:
            cur.execute(_INSERT, columns)
            cur.executemany(_UPSERT, index)
            cur.execute("SELECT pg_notify(%s, %s)",
                        (NOTIFY_CHANNEL, f"{last.init_id}:{last.sequence}"))

    def read(self, init_id: str, *, after: int = 0, upto: int | None = None) -> list[StoredEvent]:
        sql = (f"SELECT {_EVENT_COLUMNS} FROM {EVENTS} "
               "WHERE init_id = %s AND sequence > %s AND sequence <= %s ORDER BY sequence")
        rows = self._fetch(sql, (init_id, after, 2**31 - 1 if upto is None else upto))
        return [StoredEvent(*row) for row in rows]

    def read_decoded(self, init_id: str) -> list[Event]:
        sql = (f"SELECT sequence, topic, schema_version, timestamp, state FROM {EVENTS} "
               "WHERE init_id = %s ORDER BY sequence")
        return decode_rows(init_id, self._fetch(sql, (init_id,)))

    def list_init_ids(self, limit: int = 50) -> list[str]:
        return self.query_initializations(InitQuery(limit=limit))

    def query_initializations(self, query: InitQuery) -> list[str]:
        clause, params = where(query, _ph, _label_match, time_value=lambda t: t)
        sql = f"SELECT i.init_id FROM {INDEX} i WHERE {clause} {order_by(query)}"
        if query.limit is not None:
            sql += " LIMIT %(limit)s"
            params["limit"] = query.limit
        return [row[0] for row in self._fetch(sql, params)]

    def query_durations(self, query: InitQuery) -> list[tuple[str, float]]:
        clause, params = where(query, _ph, _label_match, time_value=lambda t: t)
        sql = (f"SELECT CASE e.topic WHEN 'PhaseCompleted' THEN s ->> 'phase' ELSE '{TOTAL}' "
               f"END, (s ->> 'duration_s')::float8 FROM {INDEX} i "
               f"JOIN {EVENTS} e ON e.init_id = i.init_id, "
               "LATERAL (SELECT e.state::json AS s) AS body "
               f"WHERE e.topic = ANY(%(topics)s) AND {clause}")
        params["topics"] = list(DURATION_TOPICS)
        return [(phase, float(d)) for phase, d in self._fetch(sql, params)]

    def find_init_ids(self, prefix: str, limit: int = 2) -> list[str]:
        # A range on the index table's primary key, read in index order and cut at ``limit``:
        # an index-only scan of ``limit`` entries. The bounds are in code point order; under
        # a collation other than "C" that is still the order of llm-init's own ids (lowercase
        # hex). The prefix test stays in Python: as a SQL filter, the planner misjudges it
        # and sorts the whole range.
        upper = prefix_upper(prefix)
        sql = f"SELECT init_id FROM {INDEX} WHERE init_id >= %s"
        params: list[object] = [prefix]
        if upper is not None:
            sql += " AND init_id < %s"
            params.append(upper)
        rows = self._fetch(sql + " ORDER BY init_id LIMIT %s", [*params, limit])
        return [row[0] for row in rows if row[0].startswith(prefix)]

    # -- for ``llm-init check`` (llm_init.stores.check) ------------------------------------

    def index_outcomes(self, init_ids: Sequence[str] | None = None) -> dict[str, str]:
        sql = f"SELECT init_id, outcome FROM {INDEX}"
        if init_ids is None:
            return {i: o for i, o in self._fetch(sql, ())}
        return {i: o for i, o in self._fetch(sql + " WHERE init_id = ANY(%s)", (list(init_ids),))}

    def event_init_ids(self) -> list[str]:
        return [row[0] for row in self._fetch(
            f"SELECT DISTINCT init_id FROM {EVENTS} ORDER BY init_id", ())]

    def watch(self) -> PostgresChangeFeed:
        return PostgresChangeFeed(self.target)

    def _fetch(self, sql: str, params: Sequence[object] | dict[str, object]
               ) -> list[tuple[Any, ...]]:
        with self._connection() as conn:
            return conn.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._drop()


def connect(target: PostgresTarget) -> psycopg.Connection[Any]:
    return psycopg.connect(make_conninfo(**target.params), autocommit=True)


def migrate(conn: psycopg.Connection[Any], display: str, *, create: bool) -> int:
    """Bring the schema to ``SCHEMA_VERSION``: one replica applies the missing steps under an
    advisory lock while the others wait; a database newer than this code is an error."""
    version = _version(conn)
    if version == SCHEMA_VERSION:
        return version
    if version is None and not create:
        raise EventStoreError(f"{display} holds no llm-init event log")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(f"CREATE TABLE IF NOT EXISTS {LEDGER} (version integer PRIMARY KEY, "
                     "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        version = _version(conn) or 0
        if version > SCHEMA_VERSION:
            raise EventStoreError(f"{display} has llm-init schema version {version}; this "
                                  f"llm-init knows up to {SCHEMA_VERSION}: upgrade llm-init")
        for step, description, ddl in MIGRATIONS:
            if step > version:
                for statement in filter(str.strip, ddl.split(";")):
                    conn.execute(statement)
                conn.execute(f"INSERT INTO {LEDGER} (version, description) VALUES (%s, %s)",
                             (step, description))
    return SCHEMA_VERSION


def _version(conn: psycopg.Connection[Any]) -> int | None:
    """The applied schema version, ``None`` when there is no ledger (a fresh database)."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (LEDGER,)).fetchone()
    if not row or not row[0]:
        return None
    found = conn.execute(f"SELECT max(version) FROM {LEDGER}").fetchone()
    return int(found[0]) if found and found[0] is not None else None


def _ph(name: str) -> str:
    return f"%({name})s"


def _label_match(key: str, value: str) -> str:
    return f"i.labels ->> {key} = {value}"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


class PostgresChangeFeed:
    """``LISTEN`` on its own connection: woken by the ``NOTIFY`` each append sends, no polling.
    After a lost connection it reconnects and reports a change, so the reader re-syncs."""

    def __init__(self, target: PostgresTarget) -> None:
        self._target = target
        self._conn: psycopg.Connection[Any] | None = None
        try:
            self._listen()
        except psycopg.Error as exc:
            raise EventStoreUnavailableError(
                f"cannot listen on {target.display}: {_first_line(exc)}") from exc

    def _listen(self) -> None:
        self._conn = connect(self._target)
        self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._conn is None:
                    self._listen()
                    return True
                got = any(True for _ in self._conn.notifies(timeout=timeout, stop_after=1))
                if got:
                    for _ in self._conn.notifies(timeout=0.0):  # drain what else is queued
                        pass
                return got
            except psycopg.Error:
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                time.sleep(min(1.0, left))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _without_nul(params: dict[str, object]) -> dict[str, object]:
    """Index parameters PostgreSQL accepts: its text and jsonb refuse NUL characters, which a
    model id or a label may hold. The index is a projection, so U+FFFD stands in for them
    there; the events (JSON text with the NUL escaped) keep the real value."""
    if not any(isinstance(v, str) and ("\x00" in v or "\\u0000" in v) for v in params.values()):
        return params
    clean: dict[str, object] = {}
    for name, value in params.items():
        if isinstance(value, str) and name == "labels" and "\\u0000" in value:
            value = json.dumps({_no_nul(str(k)): _no_nul(str(v))
                                for k, v in json.loads(value).items()})
        clean[name] = _no_nul(value) if isinstance(value, str) else value
    return clean


def _no_nul(text: str) -> str:
    return text.replace("\x00", "\ufffd")
