"""``ReplicaReady``: when Serve first found the replica healthy, after its initialization.

Between llm-init's ``InitializationCompleted`` and a replica Serve routes to, Ray Serve LLM still
works inside the replica's constructor (its usage report, which on a cluster's first deploy
starts an actor, and the app it serves), then runs a first health check. The engine marks the
first passed check by appending one event to the initialization's log, so that this time is
on record too.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from llm_init.callbacks import EventObserver
from llm_init.events import TERMINAL_TYPES, Event, ReplicaReady
from llm_init.recorder import notify
from llm_init.stores import open_store
from llm_init.stores.append import append_next

_log = logging.getLogger(__name__)


class ReadinessMark:
    """Appends ``ReplicaReady`` to ``init_id``'s log once, the first time ``record`` runs.

    Its time counts from the log's last event (``InitializationCompleted``); a store in memory
    (gone with the initialization) gets nothing. The event then goes to ``observers`` (the
    metrics callback) as the recorder's events do. A store error is logged, never raised: a
    health check must not fail over bookkeeping."""

    def __init__(self, store_location: str | None, init_id: str,
                 observers: Sequence[EventObserver] = ()) -> None:
        self.store_location = store_location
        self.init_id = init_id
        self.observers = tuple(observers)
        self._done = False

    def record(self) -> ReplicaReady | None:
        if self._done:
            return None
        self._done = True
        if (self.store_location or "").startswith("memory:"):
            return None
        try:
            store = open_store(self.store_location, create=False)
            try:
                event = append_next(store, self.init_id, self._build)
            finally:
                store.close()
            if not isinstance(event, ReplicaReady):
                return None  # an unfinished log: the initialization's own events come first
        except Exception as exc:
            _log.warning("llm-init: could not record the replica's readiness: %r", exc)
            return None
        notify(self.observers, event)
        return event

    def _build(self, events: Sequence[Event], sequence: int) -> ReplicaReady | None:
        last = events[-1]
        if not isinstance(last, TERMINAL_TYPES):
            return None
        now = datetime.now(UTC)
        return ReplicaReady(init_id=self.init_id, sequence=sequence, timestamp=now,
                            node_id=last.node_id,
                            since_initialization_s=(now - last.timestamp).total_seconds())
