"""``append_next``: the next event after a log's last, retried only on a sequence conflict,
on a real SQLite store."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from llm_init.artifacts.publishing import append_after_last
from llm_init.errors import DuplicateEventError, EventRejectedError
from llm_init.events import ArtifactPublishSkipped, Event
from llm_init.replay import read_events
from llm_init.stores import SQLiteEventStore, StoredEvent
from llm_init.stores.append import append_next
from tests.support.logs import records, synthetic_log


class RejectingStore(SQLiteEventStore):
    """A SQLite store that refuses every append for good, counting them."""

    appends = 0

    def append(self, records: Sequence[StoredEvent]) -> None:
        self.appends += 1
        raise EventRejectedError("this store holds no more events")


def skipped(init_id: str, sequence: int, node_id: str | None, reason: str) -> Event:
    return ArtifactPublishSkipped(init_id=init_id, sequence=sequence,
                                  timestamp=datetime.now(UTC), node_id=node_id, key="k",
                                  store="file:///s", reason=reason)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "events.db"
    with closing(SQLiteEventStore(path)) as store:
        store.append(records(synthetic_log("x")))
    return path


def test_the_event_follows_the_last_one(db: Path) -> None:
    """The event built gets the sequence number after the log's last and is appended."""
    with closing(SQLiteEventStore(db)) as store:
        last = read_events(store, "x")[-1].sequence
        event = append_next(store, "x", lambda events, seq: skipped("x", seq, None, "exists"))
        assert event is not None
        assert event.sequence == last + 1
        assert read_events(store, "x")[-1] == event


def test_a_sequence_conflict_is_retried_after_the_other_writer(db: Path) -> None:
    """When another writer takes the next sequence number first, the event is rebuilt and
    appended after that writer's."""
    sequences: list[int] = []
    with closing(SQLiteEventStore(db)) as store, closing(SQLiteEventStore(db)) as other:
        def build(events: Sequence[Event], sequence: int) -> Event:
            sequences.append(sequence)
            if len(sequences) == 1:  # the other writer gets there first
                other.append(records([skipped("x", sequence, None, "vetoed")]))
            return skipped("x", sequence, None, "exists")

        event = append_next(store, "x", build)
        log = read_events(store, "x")
    assert sequences == [sequences[0], sequences[0] + 1]
    assert [e.reason for e in log[-2:]] == ["vetoed", "exists"]  # type: ignore[attr-defined]  # a field of the Event subclass read
    assert log[-1] == event


def test_a_conflict_on_every_attempt_raises_it(db: Path) -> None:
    """A writer that loses every race gives up after ``attempts`` and raises the conflict."""
    with closing(SQLiteEventStore(db)) as store:
        def build(events: Sequence[Event], sequence: int) -> Event:
            return skipped("x", sequence - 1, None, "exists")  # always a taken number

        with pytest.raises(DuplicateEventError):
            append_next(store, "x", build, attempts=3)


def test_another_store_error_is_not_retried(tmp_path: Path) -> None:
    """A store that rejects the event for good is asked once, and the error is raised."""
    with closing(RejectingStore(tmp_path / "events.db")) as store:
        SQLiteEventStore.append(store, records(synthetic_log("x")))
        with pytest.raises(EventRejectedError):
            append_next(store, "x", lambda events, seq: skipped("x", seq, None, "exists"))
        assert store.appends == 1


def test_publishing_records_a_rejected_outcome_once(tmp_path: Path) -> None:
    """Publishing's outcome, refused by the event store, is tried once (not five times as
    if each refusal were a sequence conflict) and not raised."""
    with closing(RejectingStore(tmp_path / "events.db")) as store:
        SQLiteEventStore.append(store, records(synthetic_log("x")))
        event = append_after_last("x", ArtifactPublishSkipped,
                                  {"key": "k", "store": "file:///s", "reason": "exists"},
                                  store, None)
        assert (event, store.appends) == (None, 1)
