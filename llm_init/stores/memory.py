"""An in-process event store: for tests, benchmarks and runs that need no history."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from llm_init.errors import DuplicateEventError
from llm_init.stores.base import StoredEvent


class InMemoryEventStore:
    """Keeps records in dicts; same contract as the durable stores, lost at process exit."""

    def __init__(self) -> None:
        self._events: dict[str, dict[int, StoredEvent]] = {}
        self._started: list[tuple[str, str]] = []
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
                log = self._events.setdefault(r.init_id, {})
                if not log:
                    self._started.append((r.timestamp, r.init_id))
                log[r.sequence] = r

    def read(self, init_id: str, *, after: int = 0, upto: int | None = None) -> list[StoredEvent]:
        with self._lock:
            log = self._events.get(init_id, {})
            return [log[s] for s in sorted(log) if s > after and (upto is None or s <= upto)]

    def list_init_ids(self, limit: int = 50) -> list[str]:
        with self._lock:
            return [i for _, i in sorted(self._started, reverse=True)[:limit]]

    def close(self) -> None:
        pass
