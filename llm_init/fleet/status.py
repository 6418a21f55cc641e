"""Initializations in progress across the fleet, once or followed live as events arrive."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from llm_init import labels as label_keys
from llm_init.events import Event, InitializationStarted
from llm_init.fleet.query import query_initializations
from llm_init.replay import replay
from llm_init.stores.base import ChangeFeed, EventStore, InitQuery, WatchableStore
from llm_init.stores.codec import decode

ANY_INIT = InitQuery(limit=None)


@dataclass(frozen=True, slots=True)
class InitStatus:
    """Where one initialization stands: its phase, what runs now, and for how long."""

    init_id: str
    model_id: str
    outcome: str
    phase: str | None
    activity: str | None
    started_at: datetime | None
    last_event_at: datetime
    duration_s: float | None
    host: str | None
    labels: dict[str, str]
    error: str | None = None

    def elapsed_s(self, now: datetime | None = None) -> float | None:
        """Seconds since it started (by the replica's clock), or its duration once done; an
        abandoned one stopped at its last event."""
        if self.duration_s is not None or self.started_at is None:
            return self.duration_s
        if self.outcome == "abandoned":
            return (self.last_event_at - self.started_at).total_seconds()
        return ((now or datetime.now(UTC)) - self.started_at).total_seconds()

    @property
    def key(self) -> tuple[str, str | None, str | None]:
        """What a follower reports a change of."""
        return self.outcome, self.phase, self.activity

    def to_dict(self, now: datetime | None = None) -> dict[str, Any]:
        return {
            "init_id": self.init_id, "model_id": self.model_id, "outcome": self.outcome,
            "phase": self.phase, "activity": self.activity,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "last_event_at": self.last_event_at.isoformat(),
            "elapsed_s": self.elapsed_s(now), "host": self.host,
            "node_id": self.labels.get(label_keys.NODE_ID),
            "application": self.labels.get(label_keys.APPLICATION),
            "deployment": self.labels.get(label_keys.DEPLOYMENT),
            "labels": self.labels, "error": self.error,
        }


def status_of(events: list[Event], now: datetime | None = None) -> InitStatus:
    r = replay(events, now=now)
    first = events[0]
    return InitStatus(
        init_id=r.init_id, model_id=r.model_id, outcome=r.outcome,
        phase=r.current_phase, activity=r.current_activity, started_at=r.started_at,
        last_event_at=events[-1].timestamp, duration_s=r.duration_s,
        host=first.host if isinstance(first, InitializationStarted) else None,
        labels=r.labels, error=r.error,
    )


def running_query(query: InitQuery) -> InitQuery:
    """The inits of ``query`` in progress, judged at each run of the query (a follower's
    query runs for as long as it follows)."""
    return dataclasses.replace(query, outcome="running", order="newest", limit=None, now=None)


def fleet_status(store: EventStore, query: InitQuery = ANY_INIT, *,
                 on_disagreement: Callable[[InitStatus], None] | None = None
                 ) -> list[InitStatus]:
    """Every matching init still in progress, newest first. The index chooses which inits to
    read; their logs have the last word: one whose log has ended (completed or failed) is left
    out and handed to ``on_disagreement``, as the index is then wrong."""
    out = []
    running = dataclasses.replace(running_query(query), now=query.now or datetime.now(UTC))
    for init_id in query_initializations(store, running):
        events = [decode(r) for r in store.read(init_id)]
        if events:
            found = status_of(events, running.now)
            if found.outcome == "running":
                out.append(found)
            elif found.outcome in ("completed", "failed") and on_disagreement is not None:
                on_disagreement(found)
    return out


class FleetFollower:
    """Keeps the in-progress inits up to date, reading only the events each one gained.

    ``refresh()`` re-queries which inits run (new ones appear), reads the new events of each
    known one (including those that just finished, to catch their last event), and returns
    the statuses that changed since the previous refresh.
    """

    def __init__(self, store: EventStore, query: InitQuery = ANY_INIT) -> None:
        self.store = store
        self.query = running_query(query)
        self._events: dict[str, list[Event]] = {}
        self._reported: dict[str, tuple[str, str | None, str | None]] = {}

    @property
    def running(self) -> list[InitStatus]:
        statuses = [st for st in map(status_of, self._events.values()) if st.outcome == "running"]
        return sorted(statuses, key=lambda s: s.started_at or datetime.min.replace(tzinfo=UTC),
                      reverse=True)

    def refresh(self) -> list[InitStatus]:
        ids = query_initializations(self.store, self.query)
        changed = []
        for init_id in dict.fromkeys([*ids, *self._events]):
            known = self._events.setdefault(init_id, [])
            after = known[-1].sequence if known else 0
            known.extend(decode(r) for r in self.store.read(init_id, after=after))
            if not known:
                del self._events[init_id]
                continue
            status = status_of(known)
            if self._reported.get(init_id) != status.key:
                self._reported[init_id] = status.key
                changed.append(status)
            if status.outcome != "running":
                del self._events[init_id]
                del self._reported[init_id]
        return changed

    def expire(self) -> list[InitStatus]:
        """The known inits that went silent past their heartbeat bound since the last look,
        now ``abandoned``; judged from the events already read, with no store read."""
        changed = []
        for init_id, known in list(self._events.items()):
            status = status_of(known)
            if status.outcome != "running":
                changed.append(status)
                del self._events[init_id]
                self._reported.pop(init_id, None)
        return changed

    def follow(self, on_update: Callable[[list[InitStatus], list[InitStatus]], None], *,
               tick_s: float = 1.0, timeout_s: float | None = None,
               stop: threading.Event | None = None) -> None:
        """Call ``on_update(running, changed)`` now, on every change the store pushes, and
        every ``tick_s`` (for elapsed times; no store read then) until ``timeout_s`` passes
        or ``stop`` is set. Stores without ``watch()`` are re-read every ``tick_s``."""
        feed: ChangeFeed | None = (self.store.watch() if isinstance(self.store, WatchableStore)
                                   else None)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            changed = self.refresh()
            on_update(self.running, changed)
            while not (stop is not None and stop.is_set()):
                wait = tick_s if deadline is None else min(tick_s, deadline - time.monotonic())
                if wait <= 0:
                    return
                if feed is None:
                    time.sleep(wait)
                    changed = self.refresh()
                else:
                    changed = self.refresh() if feed.wait(wait) else self.expire()
                on_update(self.running, changed)
        finally:
            if feed is not None:
                feed.close()
