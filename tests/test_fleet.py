"""Specification of the fleet views: queries on any store, statistics, diffs, live status."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from llm_init.fleet import (
    FleetFollower,
    InitQuery,
    InitStatus,
    QueryError,
    diff_initializations,
    fleet_status,
    parse_labels,
    parse_time,
    percentile,
    phase_stats,
    query_initializations,
)
from llm_init.fleet.diff import TimeDelta, ValueDelta
from llm_init.stores import InMemoryEventStore, StoredEvent
from tests.stores.contract import with_fleet
from tests.support.logs import PHASE_NAMES, T0, records, synthetic_log


class PlainStore:
    """Only the core protocol: no index, no queries, no watch."""

    def __init__(self) -> None:
        self._inner = InMemoryEventStore()

    def append(self, batch: Sequence[StoredEvent]) -> None:
        self._inner.append(batch)

    def read(self, init_id: str, *, after: int = 0, upto: int | None = None
             ) -> list[StoredEvent]:
        return self._inner.read(init_id, after=after, upto=upto)

    def list_init_ids(self, limit: int = 50) -> list[str]:
        return self._inner.list_init_ids(limit)

    def close(self) -> None:
        pass


@pytest.fixture
def fleet() -> InMemoryEventStore:
    return with_fleet(InMemoryEventStore())


@pytest.mark.parametrize("query", [
    InitQuery(), InitQuery(model_id="llama", outcome="completed"),
    InitQuery(order="slowest", limit=3), InitQuery(node_id="n1", labels=(("zone", "eu"),)),
    InitQuery(since=T0 + timedelta(minutes=5), until=T0 + timedelta(minutes=35)),
], ids=["all", "model+outcome", "slowest", "node+label", "window"])
def test_a_store_without_an_index_gets_the_same_answers(fleet: InMemoryEventStore,
                                                        query: InitQuery) -> None:
    """Without the optional query methods, fleet queries read the logs and agree with the
    indexed answer."""
    plain = with_fleet(PlainStore())
    assert query_initializations(plain, query) == query_initializations(fleet, query)


def test_time_spans_and_iso_times_parse() -> None:
    """``--since`` takes 90s/15m/1h/2d/1w before now, or an ISO time (UTC when naive)."""
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert [parse_time(t, now=now) for t in ("90s", "15m", "1h", "2d", "1w")] == [
        now - timedelta(seconds=90), now - timedelta(minutes=15), now - timedelta(hours=1),
        now - timedelta(days=2), now - timedelta(weeks=1)]
    assert parse_time("2025-06-01T10:00:00") == datetime(2025, 6, 1, 10, tzinfo=UTC)


def test_bad_times_and_labels_are_named_in_the_error() -> None:
    """A time that is neither span nor ISO, or a label without ``=``, is refused by name."""
    with pytest.raises(QueryError, match="'yesterday'"):
        parse_time("yesterday")
    with pytest.raises(QueryError, match="'zone'"):
        parse_labels(["zone"])


def test_percentiles_interpolate_between_ranks() -> None:
    """Percentiles interpolate linearly between ranks, as numpy does by default."""
    values = [1.0, 2.0, 3.0, 4.0, 10.0]
    assert [percentile(values, q) for q in (0, 50, 95, 99, 100)] == pytest.approx(
        [1.0, 3.0, 8.8, 9.76, 10.0])


def test_stats_count_each_phase_that_completed(fleet: InMemoryEventStore) -> None:
    """Per-phase statistics of a model count the phases each init completed, and the totals
    of completed inits only."""
    found = {s.phase: (s.count, s.p50) for s in phase_stats(fleet, InitQuery(model_id="llama"))}
    assert found == {"pre_initialization": (4, 1.0), "download": (3, 1.0),
                     "placement_group": (3, 1.0), "engine_init": (2, 0.75),
                     "post_initialization": (2, 0.75), "total": (2, 3.75)}


def test_diff_compares_time_and_values_row_by_row() -> None:
    """The diff of two logs lists every phase, step and hook with both durations, then the
    run facts, labels and context values that differ."""
    a = synthetic_log("a", seconds=1.0, labels={"node_id": "n1"}, hook_s=0.1)
    b = synthetic_log("b", seconds=2.0, labels={"node_id": "n2"}, hook_s=0.1,
                      host="host-b", context={"custom_data": {"extra": 1}})
    d = diff_initializations(a, b)
    expected_times = [TimeDelta("init", "", "total", 5.0, 10.0)]
    for phase in PHASE_NAMES:
        expected_times += [TimeDelta("phase", phase, phase, 1.0, 2.0),
                           TimeDelta("hook", phase, f"cb.on_pre_{phase}", 0.1, 0.1)]
    assert d.times == expected_times
    assert d.values == [
        ValueDelta("run", "host", "host-a", "host-b"),
        ValueDelta("labels", "node_id", "n1", "n2"),
        ValueDelta("context", "custom_data.download", 1.0, 2.0),
        ValueDelta("context", "custom_data.engine_init", 1.0, 2.0),
        ValueDelta("context", "custom_data.extra", None, 1),
        ValueDelta("context", "custom_data.placement_group", 1.0, 2.0),
        ValueDelta("context", "custom_data.post_initialization", 1.0, 2.0),
        ValueDelta("context", "custom_data.pre_initialization", 1.0, 2.0),
    ]


def test_status_shows_only_inits_in_progress_with_their_phase(
        fleet: InMemoryEventStore) -> None:
    """``fleet_status`` lists the running init, in its current phase, with host and labels."""
    [status] = fleet_status(fleet)
    assert (status.init_id, status.phase, status.host, status.labels["node_id"]) == (
        "d", "download", "h2", "n2")


def progress(changes: list[InitStatus]) -> list[tuple[str, str, str | None]]:
    return [(s.init_id, s.outcome, s.phase) for s in changes]


def test_follower_reports_each_change_once_and_drops_finished_inits() -> None:
    """Refreshing after each chunk of appends reports phase changes in order, the completion
    once, and then no longer lists the init."""
    store, log = InMemoryEventStore(), records(synthetic_log("x"))
    follower = FleetFollower(store)
    seen = []
    for end in (2, 3, 8, 14, len(log)):
        store.append(log[len(store.read("x")):end])
        seen.append(progress(follower.refresh()))
    assert seen == [
        [("x", "running", "pre_initialization")], [("x", "running", "pre_initialization")],
        [("x", "running", "download")], [("x", "running", "placement_group")],
        [("x", "completed", None)],
    ]
    assert follower.running == []


def test_follow_wakes_on_appends_and_stops_when_asked() -> None:
    """``follow`` calls back with the changes an append brings, woken by the store's feed."""
    store, log = InMemoryEventStore(), records(synthetic_log("x"))
    stop, updates = threading.Event(), []

    def on_update(running: list[InitStatus], changed: list[InitStatus]) -> None:
        updates.append(progress(changed))
        if changed and changed[-1].outcome == "completed":
            stop.set()

    thread = threading.Thread(target=FleetFollower(store).follow, args=(on_update,),
                              kwargs={"tick_s": 30.0, "stop": stop})
    thread.start()
    store.append(log[:2])
    threading.Timer(0.2, store.append, [log[2:]]).start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert [u for u in updates if u] == [[("x", "running", "pre_initialization")],
                                         [("x", "completed", None)]]
