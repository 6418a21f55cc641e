"""The contract every event store passes; a subclass per store supplies ``location``."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pytest

from llm_init import (
    DuplicateEventError,
    HeartbeatRecorded,
    InitializationAbandoned,
    InitializationStarted,
    LLMConfig,
    UnknownInitializationError,
    initialize_node_sync,
)
from llm_init.replay import read_events, resolve_init_id
from llm_init.stores import (
    EventStore,
    InitQuery,
    InMemoryEventStore,
    QueryableStore,
    StoredEvent,
    WatchableStore,
    decode,
    encode,
    open_store,
)
from llm_init.stores.check import CheckReport, check_store
from tests.stores.workload import write_workload
from tests.support.callbacks import Busy
from tests.support.logs import PHASE_NAMES, T0, records, synthetic_log
from tests.support.steps import setting_steps

ROOT = Path(__file__).resolve().parents[2]
WRITERS = 8

# The fleet the query tests filter: (id, model, outcome, minutes after T0, seconds per phase,
# host, labels).
FLEET = [
    ("a", "llama", "completed", 0, 1.0, "h1",
     {"application": "chat", "deployment": "d1", "node_id": "n1"}),
    ("b", "llama", "failed", 10, 2.0, "h2",
     {"application": "chat", "deployment": "d1", "node_id": "n2"}),
    ("c", "mistral", "completed", 20, 3.0, "h1",
     {"application": "code", "deployment": "d2", "node_id": "n1"}),
    ("d", "llama", "running", 30, 1.0, "h2",
     {"application": "chat", "deployment": "d1", "node_id": "n2"}),
    ("e", "llama", "completed", 40, 0.5, "h1",
     {"application": "chat", "deployment": "d1", "node_id": "n1", "zone": "eu"}),
]


def beating_records(init_id: str, interval_s: float | None, beat_after_s: float | None
                    ) -> list[StoredEvent]:
    """An init left inside download (started at ``T0``, declaring ``interval_s``), with one
    heartbeat ``beat_after_s`` after its start."""
    events = synthetic_log(init_id, outcome="running")
    first = events[0]
    assert isinstance(first, InitializationStarted)
    events[0] = dataclasses.replace(first, heartbeat_interval_s=interval_s)
    if beat_after_s is not None and interval_s is not None:
        events.append(HeartbeatRecorded(init_id=init_id, sequence=len(events) + 1,
                                        timestamp=T0 + timedelta(seconds=beat_after_s),
                                        interval_s=interval_s))
    return records(events)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


S = TypeVar("S", bound=EventStore)


def fleet_records() -> list[list[StoredEvent]]:
    return [records(synthetic_log(i, model_id=m, outcome=o, started_at=T0 + timedelta(minutes=t),
                                  seconds=s, host=h, labels=labels))
            for i, m, o, t, s, h, labels in FLEET]


def with_fleet(store: S) -> S:
    """``store`` with the fleet's logs appended, one append per initialization."""
    for log in fleet_records():
        store.append(log)
    return store


class StoreContract:
    """Append-only, unique (init_id, sequence), one transaction per append, no loss under
    concurrent writers, typed events round-trip, fleet queries and change feeds."""

    @pytest.fixture
    def location(self) -> str:
        raise NotImplementedError

    def open(self, location: str) -> EventStore:
        return open_store(location, buffered=False)

    @pytest.fixture
    def store(self, location: str) -> Iterator[EventStore]:
        store = self.open(location)
        yield store
        store.close()

    @pytest.fixture
    def fleet(self, store: EventStore) -> EventStore:
        return with_fleet(store)

    def writers(self, location: str, count: int) -> list[int]:
        """Run ``count`` concurrent writers (processes) and return their shared wins."""
        procs = [subprocess.Popen([sys.executable, "-m", "tests.stores.contract_writer",
                                   location, str(n)], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for n in range(count)]
        outputs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0] * count, [err for _, err in outputs]
        return [int(out.strip()) for out, _ in outputs]

    def test_typed_events_round_trip_unchanged(self, store: EventStore) -> None:
        """A real run's events, appended and read back, decode to equal events in order."""
        memory = InMemoryEventStore()
        ctx = initialize_node_sync(LLMConfig(model_id="m", callback_class=Busy),
                                   event_store=memory, steps=setting_steps())
        events = [decode(r) for r in memory.read(ctx.init_id)]
        store.append([encode(e) for e in events])
        assert [decode(r) for r in store.read(ctx.init_id)] == events

    def test_read_events_gives_the_decoded_records(self, store: EventStore) -> None:
        """``read_events`` (through ``read_decoded`` where the store has it) gives the
        events of the records ``read`` returns, in order."""
        memory = InMemoryEventStore()
        ctx = initialize_node_sync(LLMConfig(model_id="m", callback_class=Busy),
                                   event_store=memory, steps=setting_steps())
        store.append(memory.read(ctx.init_id))
        assert read_events(store, ctx.init_id) == [decode(r) for r in store.read(ctx.init_id)]

    def test_read_slices_by_sequence(self, store: EventStore) -> None:
        """``read(after=, upto=)`` returns exactly the records with after < sequence <= upto."""
        log = records(synthetic_log("x"))
        store.append(log)
        assert store.read("x", after=3, upto=6) == log[3:6]

    def test_unknown_init_reads_empty(self, store: EventStore) -> None:
        """Reading an init that was never appended gives an empty list, not an error."""
        assert store.read("nobody") == []

    def test_taken_sequence_rejects_the_whole_batch(self, store: EventStore) -> None:
        """A batch whose last record reuses a stored (init_id, sequence) raises and stores
        none of its records: append is one transaction."""
        log = records(synthetic_log("x"))
        store.append(log[:3])
        with pytest.raises(DuplicateEventError):
            store.append([*log[3:6], log[0]])
        assert store.read("x") == log[:3]

    def test_duplicate_inside_one_batch_is_rejected(self, store: EventStore) -> None:
        """The same (init_id, sequence) twice in one batch raises and stores nothing."""
        log = records(synthetic_log("x"))
        with pytest.raises(DuplicateEventError):
            store.append([log[0], log[1], log[1]])
        assert store.read("x") == []

    def test_a_prefix_resolves_among_more_than_ten_thousand_inits(self, store: EventStore
                                                                  ) -> None:
        """With 10,000 inits newer than them, a unique prefix of an old init resolves to it,
        a shared one is ambiguous, and an unmatched one names the prefix."""
        def started(init_id: str, minutes: int) -> StoredEvent:
            return encode(InitializationStarted(
                init_id=init_id, sequence=1, timestamp=T0 + timedelta(minutes=minutes),
                model_id="m", config={}, context={}, callbacks=(), host="h", pid=1,
                labels={}))

        old = [started(i, 0) for i in ("a-unique-1", "b-twin-1", "b-twin-2")]
        store.append([*old, *(started(f"f{n:06d}", 1 + n) for n in range(10_000))])
        assert resolve_init_id(store, "a-u") == "a-unique-1"
        with pytest.raises(UnknownInitializationError, match="'b-t' is ambiguous"):
            resolve_init_id(store, "b-t")
        with pytest.raises(UnknownInitializationError, match="no initialization 'c-'"):
            resolve_init_id(store, "c-")

    def test_check_finds_a_healthy_fleet_consistent(self, fleet: EventStore) -> None:
        """``check_store`` finds every init of an undamaged store and no problem."""
        assert check_store(fleet) == CheckReport(len(FLEET), [])

    def test_list_init_ids_is_newest_first(self, fleet: EventStore) -> None:
        """``list_init_ids`` gives the latest-started inits first, cut at the limit."""
        assert fleet.list_init_ids(limit=3) == ["e", "d", "c"]

    @pytest.mark.parametrize(("query", "expected"), [
        (InitQuery(), ["e", "d", "c", "b", "a"]),
        (InitQuery(limit=2), ["e", "d"]),
        (InitQuery(model_id="llama"), ["e", "d", "b", "a"]),
        (InitQuery(outcome="failed"), ["b"]),
        (InitQuery(outcome="running"), ["d"]),
        (InitQuery(since=T0 + timedelta(minutes=15)), ["e", "d", "c"]),
        (InitQuery(until=T0 + timedelta(minutes=15)), ["b", "a"]),
        (InitQuery(host="h2"), ["d", "b"]),
        (InitQuery(node_id="n1"), ["e", "c", "a"]),
        (InitQuery(application="code"), ["c"]),
        (InitQuery(deployment="d1", outcome="completed"), ["e", "a"]),
        (InitQuery(labels=(("zone", "eu"),)), ["e"]),
        (InitQuery(order="slowest"), ["c", "b", "a", "e", "d"]),
        (InitQuery(order="slowest", outcome="completed", limit=2), ["c", "a"]),
    ], ids=["all", "limit", "model", "failed", "running", "since", "until", "host", "node",
            "application", "deployment+outcome", "label", "slowest", "slowest-completed"])
    def test_query_initializations_filters_and_orders(
            self, fleet: EventStore, query: InitQuery, expected: list[str]) -> None:
        """Each filter of a fleet query keeps exactly the matching inits, in its order."""
        assert isinstance(fleet, QueryableStore)
        assert fleet.query_initializations(query) == expected

    def test_query_durations_gives_phases_and_totals(self, fleet: EventStore) -> None:
        """Durations of one model's inits: each phase's recorded seconds and the total."""
        assert isinstance(fleet, QueryableStore)
        found = sorted(fleet.query_durations(InitQuery(model_id="mistral")))
        assert found == sorted([(p, 3.0) for p in PHASE_NAMES] + [("total", 15.0)])

    def test_outcome_is_judged_by_the_last_heartbeat_at_query_time(
            self, store: EventStore) -> None:
        """An unfinished init is running until three heartbeat intervals after its last beat
        and abandoned from then on, in the query's ``now``; one that declares no heartbeat
        stays running."""
        assert isinstance(store, QueryableStore)
        store.append(beating_records("x", 5.0, beat_after_s=10.0))  # bound: T0 + 25 s
        store.append(beating_records("old", None, beat_after_s=None))

        def outcomes(now: datetime) -> dict[str, list[str]]:
            return {o: store.query_initializations(InitQuery(outcome=o, now=now))
                    for o in ("running", "abandoned")}

        assert outcomes(at(24.9)) == {"running": ["x", "old"], "abandoned": []}
        assert outcomes(at(25.1)) == {"running": ["old"], "abandoned": ["x"]}
        assert outcomes(at(86400.0)) == {"running": ["old"], "abandoned": ["x"]}
        assert store.query_durations(InitQuery(outcome="abandoned", now=at(25.1))) == [
            ("pre_initialization", 1.0)]

    def test_a_later_heartbeat_moves_the_bound(self, store: EventStore) -> None:
        """Each heartbeat, appended on its own, pushes the init's bound to three intervals
        after it."""
        assert isinstance(store, QueryableStore)
        log = beating_records("x", 5.0, beat_after_s=10.0)
        store.append(log)
        store.append(records([HeartbeatRecorded(init_id="x", sequence=len(log) + 1,
                                                timestamp=at(20.0), interval_s=5.0)]))
        assert store.query_initializations(InitQuery(outcome="running", now=at(34.9))) == ["x"]
        assert store.query_initializations(InitQuery(outcome="abandoned", now=at(35.1))) == [
            "x"]

    def test_a_recorded_abandonment_is_final(self, store: EventStore) -> None:
        """An init closed with ``InitializationAbandoned`` is abandoned at any time, even
        within its heartbeat bound, and never running."""
        assert isinstance(store, QueryableStore)
        log = beating_records("x", 5.0, beat_after_s=10.0)
        store.append(log)
        store.append(records([InitializationAbandoned(
            init_id="x", sequence=len(log) + 1, timestamp=at(11.0), reason="process gone",
            phase="download", host="host-a", pid=1, closed_by_pid=2)]))
        assert store.query_initializations(InitQuery(outcome="abandoned", now=at(11.0))) == [
            "x"]
        assert store.query_initializations(InitQuery(outcome="running", now=at(11.0))) == []

    def test_index_follows_an_init_appended_event_by_event(self, store: EventStore) -> None:
        """An init appended one event per transaction is indexed like one appended at once."""
        assert isinstance(store, QueryableStore)
        for record in records(synthetic_log("x", outcome="failed", seconds=2.0)):
            store.append([record])
        assert store.query_initializations(InitQuery(outcome="failed")) == ["x"]
        assert sorted(store.query_durations(InitQuery())) == [
            ("download", 2.0), ("placement_group", 2.0), ("pre_initialization", 2.0)]

    def test_watch_wakes_on_an_append_from_elsewhere(self, store: EventStore,
                                                     location: str) -> None:
        """A change feed returns True soon after another connection appends, and False when
        nothing was appended before its timeout."""
        assert isinstance(store, WatchableStore)
        feed = store.watch()
        other = self.open(location)
        timer = threading.Timer(0.2, other.append, [records(synthetic_log("x"))[:2]])
        started = time.monotonic()
        timer.start()
        try:
            assert feed.wait(10.0) is True
            woke_after = time.monotonic() - started
            assert feed.wait(0.3) is False
        finally:
            timer.join()
            feed.close()
            other.close()
        assert woke_after < 2.0

    def test_concurrent_writers_lose_and_duplicate_nothing(self, location: str,
                                                           store: EventStore) -> None:
        """Eight concurrent writers: every init complete and in order, and each event of the
        init they race for was won by exactly one writer."""
        wins = self.writers(location, WRITERS)
        shared = records(synthetic_log("shared"))
        assert sum(wins) == len(shared)
        assert store.read("shared") == shared
        for writer in range(WRITERS):
            for k in range(10):
                assert store.read(f"w{writer}-{k}") == records(synthetic_log(f"w{writer}-{k}"))


class MemoryContract(StoreContract):
    """The in-memory store: one object shared by threads instead of processes."""

    @pytest.fixture
    def location(self) -> str:
        return "memory://"

    @pytest.fixture
    def store(self, location: str) -> EventStore:
        self._shared = InMemoryEventStore()
        return self._shared

    def open(self, location: str) -> EventStore:
        return self._shared

    def writers(self, location: str, count: int) -> list[int]:
        wins = [0] * count

        def run(n: int) -> None:
            wins[n] = write_workload(self._shared, n)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return wins
