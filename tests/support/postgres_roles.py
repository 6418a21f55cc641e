"""PostgreSQL roles for tests of what a store refuses."""

from __future__ import annotations

import contextlib
import os
import urllib.parse
import uuid
from collections.abc import Iterator

import psycopg

from llm_init.stores.postgres import PostgresEventStore


@contextlib.contextmanager
def read_only_role(postgres_url: str) -> Iterator[str]:
    """``postgres_url`` as a new role that may read the llm-init tables but not write them."""
    PostgresEventStore(postgres_url).close()  # creates the tables
    reader = f"reader_{uuid.uuid4().hex[:8]}"
    schema = urllib.parse.unquote(postgres_url).rsplit("search_path=", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {reader} LOGIN PASSWORD '{os.environ['PGPASSWORD']}'")
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {reader}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader}")
    try:
        parts = urllib.parse.urlsplit(postgres_url)
        host = parts.netloc.rsplit("@", 1)[-1]
        yield urllib.parse.urlunsplit(parts._replace(netloc=f"{reader}@{host}"))
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {reader}")
            conn.execute(f"DROP ROLE {reader}")
