"""Numbers, stamps, stores and fans out the events of one initialization."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from opentelemetry import trace

from llm_init.callbacks import EventObserver
from llm_init.events import Event
from llm_init.stores.base import EventStore, encode

E = TypeVar("E", bound=Event)
_log = logging.getLogger(__name__)


class EventRecorder:
    """Gives each event the next sequence number and the current span, appends pending events
    to the store in one transaction per ``commit``, then hands them to every observer."""

    def __init__(self, init_id: str, store: EventStore, observers: Sequence[EventObserver] = (),
                 *, node_id: str | None = None) -> None:
        self.init_id = init_id
        self.node_id = node_id
        self.events: list[Event] = []
        self._store = store
        self._observers = tuple(observers)
        self._pending: list[Event] = []
        self._sequence = 0
        self._lock = threading.RLock()

    def emit(self, event_type: type[E], /, **fields: Any) -> E:
        span_context = trace.get_current_span().get_span_context()
        ids: dict[str, Any] = {}
        if span_context.is_valid:
            ids = {"trace_id": format(span_context.trace_id, "032x"),
                   "span_id": format(span_context.span_id, "016x")}
        with self._lock:
            self._sequence += 1
            event = event_type(init_id=self.init_id, sequence=self._sequence,
                               timestamp=datetime.now(UTC), node_id=self.node_id,
                               **ids, **fields)
            self._pending.append(event)
        return event

    def commit(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
            if not batch:
                return
            self._store.append([encode(e) for e in batch])
            self.events.extend(batch)
        for event in batch:
            for observer in self._observers:
                try:
                    observer.on_event(event)
                except Exception:
                    # Observers watch; they never get to break the initialization they watch.
                    _log.warning("event observer %r failed on %s", observer, event.TYPE,
                                 exc_info=True)

    def record(self, event_type: type[E], /, **fields: Any) -> E:
        """Emit one event and commit it at once."""
        event = self.emit(event_type, **fields)
        self.commit()
        return event
