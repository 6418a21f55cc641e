"""SQLite and PostgreSQL event stores side by side: append, replay and fleet-query speed.

    python benchmarks/event_store.py [--inits 10000] [--postgres URL] [--repeat 3]

Both stores run durable: an append returns once its transaction is on disk. For SQLite that
is WAL with ``synchronous=FULL`` (the store's ``durable=True``: the WAL is fsynced at every
commit); its default, ``synchronous=NORMAL``, which survives a killed process but can lose
the last commits on power loss, is measured too. For PostgreSQL it is ``fsync=on`` and
``synchronous_commit=on`` (checked and printed). Without ``--postgres`` a throwaway
PostgreSQL is started on loopback (Debian's binaries, as the tests do) with those defaults.

Appends are measured with one writer and with ``--writers`` concurrent writer processes
(default 4), each appending whole initializations. Each figure is the median of
``--repeat`` runs (replay: of at least 5, latencies: of 7). Replay, CPU-bound, is also given
in this process's CPU time, which other work on a shared machine moves much less than the
wall clock; its parts are given in CPU time only. The logs are clones of one real
initialization with two callbacks (about 60 events), varied in model, node, application and
durations.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llm_init import DefaultSteps, LLMConfig, NodeInitializationContext, initialize_node_sync
from llm_init.fleet import InitQuery, find_initializations, phase_stats
from llm_init.replay import read_events, replay
from llm_init.stores import (
    EventStore,
    InMemoryEventStore,
    SQLiteEventStore,
    StoredEvent,
    decode,
    decode_rows,
    encode,
    open_store,
)

MODELS = ["llama-3-8b", "llama-3-70b", "mistral-7b", "qwen-2-7b", "phi-3"]


class Tuner:
    """A callback on every hook that also changes the context, as real ones do."""

    def _touch(self, ctx: NodeInitializationContext, hook: str) -> None:
        ctx.custom_data[hook] = len(ctx.custom_data)

    def on_pre_initialization(self, ctx: NodeInitializationContext) -> None:
        self._touch(ctx, "pre_initialization")
        ctx.runtime_env = {"env_vars": {"HF_HUB_OFFLINE": "1"}}

    def on_pre_download(self, ctx: NodeInitializationContext) -> None:
        self._touch(ctx, "pre_download")

    def on_post_download(self, ctx: NodeInitializationContext) -> None:
        self._touch(ctx, "post_download")

    def on_pre_placement_group(self, ctx: NodeInitializationContext) -> None:
        self._touch(ctx, "pre_placement_group")

    def on_post_placement_group(self, ctx: NodeInitializationContext) -> None:
        self._touch(ctx, "post_placement_group")

    def on_pre_engine_init(self, ctx: NodeInitializationContext) -> None:
        ctx.extra_init_kwargs["max_model_len"] = 4096

    def on_post_engine_init(self, ctx: NodeInitializationContext) -> None:
        self._touch(ctx, "post_engine_init")

    def on_post_initialization(self, ctx: NodeInitializationContext) -> None:
        self._touch(ctx, "post_initialization")


class Watcher:
    """A second callback with a few hooks that only read."""

    def on_pre_download(self, ctx: NodeInitializationContext) -> None:
        pass

    def on_pre_placement_group(self, ctx: NodeInitializationContext) -> None:
        pass

    def on_post_engine_init(self, ctx: NodeInitializationContext) -> None:
        pass


@dataclasses.dataclass
class Sets:
    field: str
    value: Any

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        report(bytes=512)
        report(bytes=1024)
        setattr(ctx, self.field, self.value)


def template() -> list[StoredEvent]:
    store = InMemoryEventStore()
    steps = DefaultSteps(download=Sets("download_result", {"path": "/models/x", "bytes": 1}),
                         placement_group=Sets("placement_group", {"bundles": [{"GPU": 1}]}),
                         engine=Sets("engine", "engine"))
    ctx = initialize_node_sync(LLMConfig(model_id="template", callback_class=[Tuner, Watcher]),
                               event_store=store, steps=steps,
                               labels={"application": "app", "node_id": "n"})
    return store.read(ctx.init_id)


def clone(base: Sequence[StoredEvent], k: int) -> list[StoredEvent]:
    """Init number ``k``: a new id, started ``k`` seconds after the template, with its own
    model, labels and durations."""
    init_id = uuid.UUID(int=k + 1).hex
    scale = 1.0 + (k * 7919 % 1000) / 250.0
    shift = timedelta(seconds=k)
    out = []
    for r in base:
        e = decode(r)
        changes: dict[str, Any] = {"init_id": init_id, "timestamp": e.timestamp + shift}
        if hasattr(e, "duration_s"):
            changes["duration_s"] = e.duration_s * scale
        if hasattr(e, "model_id"):
            changes["model_id"] = MODELS[k % len(MODELS)]
            changes["labels"] = {"application": f"app-{k % 3}", "node_id": f"node-{k % 16}"}
        out.append(encode(dataclasses.replace(e, **changes)))
    return out


def median_of(repeat: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(repeat))


def timed(fn: Callable[[], Any], clock: Callable[[], float] = time.perf_counter) -> float:
    t = clock()
    fn()
    return clock() - t


def cpu_timed(fn: Callable[[], Any]) -> float:
    """Seconds of this process's CPU time: on a shared machine, the figure that other work's
    share of the cores does not move (for the CPU-bound reads; appends wait on disk)."""
    return timed(fn, time.process_time)


# -- appends ---------------------------------------------------------------------------------

Opener = Callable[[str], EventStore]


def append_rate(location: Callable[[], str], opener: Opener, logs: Sequence[list[StoredEvent]],
                per_event: bool) -> float:
    store = opener(location())
    events = sum(map(len, logs))
    t = time.perf_counter()
    for log in logs:
        if per_event:
            for r in log:
                store.append([r])
        else:
            store.append(log)
    dt = time.perf_counter() - t
    store.close()
    return events / dt


def _writer(location: str, opener: Opener, logs: list[list[StoredEvent]], ready: Any,
            go: Any) -> None:
    store = opener(location)
    ready.release()
    go.wait()
    for log in logs:
        store.append(log)
    store.close()


def concurrent_rate(location: Callable[[], str], opener: Opener,
                    logs: Sequence[list[StoredEvent]], writers: int) -> float:
    where = location()
    opener(where).close()  # schema in place before the clock starts
    ctx = mp.get_context("fork")
    ready, go = ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=_writer,
                         args=(where, opener, list(logs[w::writers]), ready, go))
             for w in range(writers)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.acquire()
    t = time.perf_counter()
    go.set()
    for p in procs:
        p.join()
    dt = time.perf_counter() - t
    assert all(p.exitcode == 0 for p in procs)
    return sum(map(len, logs)) / dt


# -- reads -----------------------------------------------------------------------------------

def replay_rates(store: EventStore, ids: Sequence[str], repeat: int) -> dict[str, float]:
    """Events per second over ``ids``: read+decode+replay (wall clock and CPU time) and
    decode+replay of records already read."""
    records = [store.read(i) for i in ids]
    events = sum(map(len, records))

    def full() -> None:
        for i in ids:
            replay(read_events(store, i))

    def local() -> None:
        for log in records:
            replay([decode(r) for r in log])

    return {
        "replay: read+decode+replay (ev/s)": events / median_of(repeat, lambda: timed(full)),
        "replay: read+decode+replay, CPU time (ev/s)":
            events / median_of(repeat, lambda: cpu_timed(full)),
        "replay: decode+replay (ev/s)": events / median_of(repeat, lambda: timed(local)),
    }


def replay_parts(path: str, ids: Sequence[str], repeat: int) -> dict[str, float]:
    """Where replay's time goes, part by part, in events per second: the rows as sqlite3 alone
    fetches them, JSON parsing alone (msgspec, to plain dicts), decoding the rows into typed
    events, and applying the events. The first two bound what any decoder can reach."""
    import sqlite3

    import msgspec

    conn = sqlite3.connect(path.removeprefix("sqlite://"))
    sql = ("SELECT sequence, topic, schema_version, timestamp, state FROM events "
           "WHERE init_id = ? ORDER BY sequence")
    rows = [conn.execute(sql, (i,)).fetchall() for i in ids]
    bodies = [[r[4] for r in log] for log in rows]
    parse = msgspec.json.Decoder().decode
    events = [decode_rows(i, log) for i, log in zip(ids, rows, strict=True)]
    n = sum(map(len, rows))

    # Each part keeps one initialization's results at a time, as replay does: keeping all
    # of them alive would time the garbage collector walking them too.
    def fetch() -> None:
        for i in ids:
            conn.execute(sql, (i,)).fetchall()

    def parse_all() -> None:
        for log in bodies:
            [parse(b) for b in log]

    def decode_all() -> None:
        for i, log in zip(ids, rows, strict=True):
            decode_rows(i, log)

    def apply_all() -> None:
        for log in events:
            replay(log)

    parts = {
        "fetch rows, sqlite3 alone": fetch,
        "parse bodies to dicts, msgspec alone": parse_all,
        "decode rows to typed events": decode_all,
        "apply events (replay)": apply_all,
    }
    out = {f"  replay part: {name}, CPU time (ev/s)":
           n / median_of(repeat, lambda fn=fn: cpu_timed(fn))  # type: ignore[misc]  # the loop variable bound as a default
           for name, fn in parts.items()}
    conn.close()
    return out


def latencies(store: EventStore, some_id: str) -> dict[str, float]:
    model = MODELS[1]
    runs = {
        "list latest 50 (ms)": lambda: find_initializations(store, InitQuery(limit=50)),
        "list --slowest 10 --model M (ms)": lambda: find_initializations(
            store, InitQuery(model_id=model, order="slowest", limit=10)),
        "timeline, one init (ms)": lambda: replay(read_events(store, some_id)),
        "stats --model M (ms)": lambda: phase_stats(store, InitQuery(model_id=model,
                                                                     limit=None)),
        "stats, all inits (ms)": lambda: phase_stats(store, InitQuery(limit=None)),
    }
    return {name: 1000 * median_of(7, lambda fn=fn: timed(fn))  # type: ignore[misc]  # the loop variable bound as a default
            for name, fn in runs.items()}


# -- the run ---------------------------------------------------------------------------------

def appends(name: str, fresh: Callable[[], str], opener: Opener, writers: int, repeat: int,
            small: list[list[StoredEvent]], many: list[list[StoredEvent]]) -> dict[str, float]:
    out: dict[str, float] = {}
    print(f"[{name}] appending ...", file=sys.stderr)
    out["append, 1 writer, one tx per init (ev/s)"] = median_of(
        repeat, lambda: append_rate(fresh, opener, small, per_event=False))
    out["append, 1 writer, one tx per event (ev/s)"] = median_of(
        repeat, lambda: append_rate(fresh, opener, small[:40], per_event=True))
    out[f"append, {writers} writer processes, one tx per init (ev/s)"] = median_of(
        repeat, lambda: concurrent_rate(fresh, opener, many, writers))
    return out


def bench(name: str, fresh: Callable[[], str], opener: Opener, writers: int, n_inits: int,
          repeat: int, base: list[StoredEvent]) -> dict[str, float]:
    print(f"[{name}] cloning ...", file=sys.stderr)
    small = [clone(base, k) for k in range(200)]
    many = [clone(base, k) for k in range(400)]
    out = appends(name, fresh, opener, writers, repeat, small, many)
    if name == "SQLite":
        # The store's default: same rows, the figures that hold up to a killed process.
        normal = appends(f"{name}, synchronous=NORMAL", fresh, _sqlite_normal, writers, repeat,
                         small, many)
        out.update({f"{row[:row.rindex(' (')]}, synchronous=NORMAL (ev/s)": value
                    for row, value in normal.items()})
    big = fresh()
    store = opener(big)
    spent = 0.0
    for start in range(0, n_inits, 500):
        chunk = [clone(base, k) for k in range(start, min(n_inits, start + 500))]
        t = time.perf_counter()
        for log in chunk:
            store.append(log)
        spent += time.perf_counter() - t
    out[f"append, filling {n_inits} inits (s)"] = spent
    print(f"[{name}] filled in {spent:.1f} s", file=sys.stderr)
    ids = store.list_init_ids(1000)[:500]
    out.update(replay_rates(store, ids, max(repeat, 5)))
    if big.startswith("sqlite://"):
        out.update(replay_parts(big, ids, max(repeat, 5)))
    out.update(latencies(store, ids[len(ids) // 2]))
    store.close()
    return out


def _sqlite_durable(location: str) -> EventStore:
    return SQLiteEventStore(location.removeprefix("sqlite://"), durable=True)


def _sqlite_normal(location: str) -> EventStore:
    return SQLiteEventStore(location.removeprefix("sqlite://"), durable=False)


def _postgres(location: str) -> EventStore:
    return open_store(location, buffered=False)


def fresh_schema(admin: str) -> str:
    """A URL of ``admin``'s database whose search path is a new, empty schema."""
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in admin else "?"
    return f"{admin}{sep}options=-csearch_path%3D{name}"


def postgres_durability(url: str) -> str:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        found = {name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]  # SHOW always returns a row
                 for name in ("fsync", "synchronous_commit")}
    return ", ".join(f"{k}={v}" for k, v in found.items())


@contextmanager
def postgres(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    from tests.support.postgres import running_server

    with running_server(fast=False) as server:
        os.environ["PGPASSWORD"] = server.password
        yield server.url()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inits", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--writers", type=int, default=4,
                        help="concurrent writer processes (default 4)")
    parser.add_argument("--postgres", help="postgresql:// URL of a database to use (it gets "
                        "one schema per run, dropped afterwards); default: start one")
    parser.add_argument("--only", choices=["sqlite", "postgres"])
    args = parser.parse_args()
    base = template()
    print(f"template init: {len(base)} events", file=sys.stderr)
    results: dict[str, dict[str, float]] = {}
    durability: dict[str, str] = {}
    counter = iter(range(10**6))
    if args.only != "postgres":
        tmp = Path(tempfile.mkdtemp(prefix="llm-init-bench-"))
        try:
            results["SQLite"] = bench(
                "SQLite", lambda: f"sqlite://{tmp / f'{next(counter)}.sqlite'}", _sqlite_durable,
                args.writers, args.inits, args.repeat, base)
            durability["SQLite"] = "WAL, synchronous=FULL (fsync at every commit)"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # about 250 MB at 10,000 inits
    if args.only != "sqlite":
        with postgres(args.postgres) as admin:
            def fresh() -> str:
                return fresh_schema(admin)

            durability["PostgreSQL"] = postgres_durability(admin)
            results["PostgreSQL"] = bench("PostgreSQL", fresh, _postgres, args.writers,
                                          args.inits, args.repeat, base)
    for store, durable in durability.items():
        print(f"{store}: {durable}")
    print_table(results, len(base))


TARGETS = {
    "append, 1 writer, one tx per init (ev/s)": ">= 20,000",
    "replay: read+decode+replay (ev/s)": ">= 200,000",
    "list latest 50 (ms)": "< 200",
    "timeline, one init (ms)": "< 50",
}


def print_table(results: dict[str, dict[str, float]], per_init: int) -> None:
    stores = list(results)
    rows: list[str] = []
    for r in results.values():
        rows += [k for k in r if k not in rows]
    width = max(map(len, rows)) + 2
    head = f"{'(' + str(per_init) + ' events per init)':<{width}}" + "".join(
        f"{s:>14}" for s in stores) + f"{'target':>16}"
    print(head)
    print("-" * len(head))
    for row in rows:
        cells = []
        for s in stores:
            value = results[s].get(row)
            text = "-" if value is None else format(value, ",.0f" if value >= 100 else ".1f")
            cells.append(f"{text:>14}")
        print(f"{row:<{width}}" + "".join(cells) + f"{TARGETS.get(row, ''):>16}")


if __name__ == "__main__":
    main()
