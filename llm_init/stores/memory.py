"""An in-process event store: for tests, benchmarks and runs that need no history."""

from __future__ import annotations

import bisect
import json
import threading
from collections.abc import Sequence

from llm_init.errors import DuplicateEventError
from llm_init.stores.base import InitQuery
from llm_init.stores.codec import StoredEvent
from llm_init.stores.index import (
    DURATION_TOPICS,
    TOTAL,
    InitIndexRow,
    index_rows,
    matches,
    merge,
    ordered,
)


class InMemoryEventStore:
    """Keeps records in dicts; same contract as the durable stores, lost at process exit."""

    def __init__(self) -> None:
        self._events: dict[str, dict[int, StoredEvent]] = {}
        self._index: dict[str, InitIndexRow] = {}
        self._ids: list[str] = []  # the index's ids, sorted when a prefix search needs it
        self._ids_sorted = True
        self._changed = threading.Condition()
        self._version = 0
        self._lock = threading.Lock()

    def append(self, records: Sequence[StoredEvent]) -> None:
        with self._lock:
            seen: set[tuple[str, int]] = set()
            for r in records:
                key = (r.init_id, r.sequence)
                if key in seen or r.sequence in self._events.get(r.init_id, {}):
                    raise DuplicateEventError(
                        f"event {r.init_id}#{r.sequence} is already recorded"
                    )
                seen.add(key)
            for r in records:
                self._events.setdefault(r.init_id, {})[r.sequence] = r
            for row in index_rows(records):
                old = self._index.get(row.init_id)
                if old is None:
                    self._ids.append(row.init_id)
                    self._ids_sorted = False
                self._index[row.init_id] = row if old is None else merge(old, row)
        if records:
            with self._changed:
                self._version += 1
                self._changed.notify_all()

    def read(self, init_id: str, *, after: int = 0, upto: int | None = None) -> list[StoredEvent]:
        with self._lock:
            log = self._events.get(init_id, {})
            return [log[s] for s in sorted(log) if s > after and (upto is None or s <= upto)]

    def list_init_ids(self, limit: int = 50) -> list[str]:
        return self.query_initializations(InitQuery(limit=limit))

    def query_initializations(self, query: InitQuery) -> list[str]:
        with self._lock:
            rows = [r for r in self._index.values() if matches(r, query)]
        return ordered(rows, query)

    def find_init_ids(self, prefix: str, limit: int = 2) -> list[str]:
        with self._lock:
            if not self._ids_sorted:  # timsort of a sorted run plus a few: near linear
                self._ids.sort()
                self._ids_sorted = True
            at = bisect.bisect_left(self._ids, prefix)
            found = self._ids[at:at + limit]
        return [i for i in found if i.startswith(prefix)]

    def index_outcomes(self, init_ids: Sequence[str] | None = None) -> dict[str, str]:
        with self._lock:
            rows = [self._index[i] for i in (self._index if init_ids is None else init_ids)
                    if i in self._index]
        return {r.init_id: r.outcome or "running" for r in rows}

    def event_init_ids(self) -> list[str]:
        with self._lock:
            return sorted(self._events)

    def query_durations(self, query: InitQuery) -> list[tuple[str, float]]:
        with self._lock:
            logs = [self._events[r.init_id] for r in self._index.values() if matches(r, query)]
            records = [e for log in logs for e in log.values() if e.topic in DURATION_TOPICS]
        found = []
        for e in records:
            body = json.loads(e.state)
            found.append((body["phase"] if e.topic == "PhaseCompleted" else TOTAL,
                          float(body["duration_s"])))
        return found

    def watch(self) -> _MemoryFeed:
        return _MemoryFeed(self)

    def close(self) -> None:
        pass


class _MemoryFeed:
    """Wakes on the store's condition variable: a push, no polling."""

    def __init__(self, store: InMemoryEventStore) -> None:
        self._store = store
        with store._changed:
            self._seen = store._version

    def wait(self, timeout: float) -> bool:
        store = self._store
        with store._changed:
            store._changed.wait_for(lambda: store._version != self._seen, timeout)
            changed = store._version != self._seen
            self._seen = store._version
        return changed

    def close(self) -> None:
        pass
