"""How long resolving a shortened init id takes, by store and number of initializations.

    python benchmarks/resolve_prefix.py [--inits 1000 10000 100000] [--postgres URL]

Each store gets ``--inits`` initializations (one ``InitializationStarted`` each, uuid4 hex ids
as the runtime makes them), then ``resolve_init_id`` is timed for an 8-character unique prefix
of the oldest init (the case the old newest-10,000 scan missed), a 1-character ambiguous
prefix, and a prefix matching nothing; each figure is the median of ``--repeat`` calls, in
milliseconds. Without ``--postgres`` a throwaway PostgreSQL is started on loopback.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm_init import InitializationStarted, UnknownInitializationError
from llm_init.replay import resolve_init_id
from llm_init.stores import EventStore, InMemoryEventStore, SQLiteEventStore, encode, open_store

T0 = datetime(2025, 1, 1, tzinfo=UTC)
BATCH = 5_000


def fill(store: EventStore, count: int) -> list[str]:
    """``count`` inits, oldest first; returns their ids in that order."""
    ids = [uuid.uuid4().hex for _ in range(count)]
    for start in range(0, count, BATCH):
        store.append([encode(InitializationStarted(
            init_id=i, sequence=1, timestamp=T0 + timedelta(seconds=start + n), model_id="m",
            config={}, context={}, callbacks=(), host="h", pid=1, labels={}))
            for n, i in enumerate(ids[start:start + BATCH])])
    return ids


def median_ms(repeat: int, call: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        # The ambiguous and unmatched cases end in this error: that is their answer.
        with contextlib.suppress(UnknownInitializationError):
            call()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def measure(store: EventStore, count: int, repeat: int) -> tuple[float, float, float]:
    ids = fill(store, count)
    oldest = ids[0]
    assert resolve_init_id(store, oldest[:8]) == oldest
    unmatched = "g"  # not a hex digit: no uuid4 hex id starts with it
    return (median_ms(repeat, lambda: resolve_init_id(store, oldest[:8])),
            median_ms(repeat, lambda: resolve_init_id(store, oldest[:1])),
            median_ms(repeat, lambda: resolve_init_id(store, unmatched)))


@contextmanager
def postgres_admin(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    import os

    from tests.support.postgres import running_server

    with running_server() as server:
        os.environ["PGPASSWORD"] = server.password
        yield server.url()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inits", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--postgres", help="postgresql:// URL (gets one schema per size)")
    parser.add_argument("--only", choices=["memory", "sqlite", "postgres"])
    args = parser.parse_args()
    rows: list[tuple[str, int, tuple[float, float, float]]] = []
    if args.only in (None, "memory"):
        for count in args.inits:
            rows.append(("memory", count, measure(InMemoryEventStore(), count, args.repeat)))
    if args.only in (None, "sqlite"):
        with tempfile.TemporaryDirectory(prefix="llm-init-bench-") as tmp:
            for count in args.inits:
                store = SQLiteEventStore(Path(tmp) / f"{count}.sqlite")
                rows.append(("SQLite", count, measure(store, count, args.repeat)))
                store.close()
    if args.only in (None, "postgres"):
        import psycopg

        with postgres_admin(args.postgres) as admin:
            for count in args.inits:
                schema = f"bench_{uuid.uuid4().hex[:10]}"
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f"CREATE SCHEMA {schema}")
                sep = "&" if "?" in admin else "?"
                store = open_store(f"{admin}{sep}options=-csearch_path%3D{schema}",
                                   buffered=False)
                try:
                    rows.append(("PostgreSQL", count, measure(store, count, args.repeat)))
                finally:
                    store.close()
                    with psycopg.connect(admin, autocommit=True) as conn:
                        conn.execute(f"DROP SCHEMA {schema} CASCADE")
    print(f"resolve_init_id, median of {args.repeat} calls (ms)")
    print(f"{'store':<11} {'inits':>8} {'unique (8)':>11} {'ambiguous (1)':>14} "
          f"{'no match':>9}")
    for name, count, (unique, ambiguous, none) in rows:
        print(f"{name:<11} {count:>8,} {unique:>11.3f} {ambiguous:>14.3f} {none:>9.3f}")


if __name__ == "__main__":
    main()
