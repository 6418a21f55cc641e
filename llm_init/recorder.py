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


def notify(observers: Sequence[EventObserver], event: Event) -> None:
    """Hand ``event`` to each observer; a failing observer is logged and skipped."""
    for observer in observers:
        try:
            observer.on_event(event)
        except Exception:
            # Observers watch; they never get to break the initialization they watch.
            _log.warning("event observer %r failed on %s", observer, event.TYPE, exc_info=True)


class EventRecorder:
    """Gives each event the next sequence number and the current span, appends pending events
    to the store in one transaction per ``commit``, then hands them to every observer.

    ``checkpoint()`` marks a point where pending events should reach the store. With
    ``flush_interval_s == 0`` it commits at once. With a positive interval (group commit) a
    writer thread commits pending events at least that often, so many hook calls share one
    transaction and a long-running hook still shows up in the store within the interval;
    ``commit()``/``record()`` stay immediate for what must be durable at once (failures, phase
    boundaries). Observers are called in sequence order, from whichever thread commits.
    """

    def __init__(self, init_id: str, store: EventStore, observers: Sequence[EventObserver] = (),
                 *, node_id: str | None = None, flush_interval_s: float = 0.0) -> None:
        self.init_id = init_id
        self.node_id = node_id
        self.events: list[Event] = []
        self._store = store
        self._observers = tuple(observers)
        self._pending: list[Event] = []
        self._sequence = 0
        self._lock = threading.Lock()  # sequence numbers and the pending list
        self._commit_lock = threading.RLock()  # one commit at a time, so observers see order
        self._flush_interval = flush_interval_s
        self._writer: threading.Thread | None = None
        self._writer_failed = False
        self._stop = threading.Event()
        self._trace_ids: tuple[int, str] = (0, "")
        self._span_ids: tuple[int, str] = (0, "")

    def emit(self, event_type: type[E], /, **fields: Any) -> E:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:  # hex ids, formatted once per trace and per span
            trace_ids, span_ids = self._trace_ids, self._span_ids
            if trace_ids[0] != span_context.trace_id:
                trace_ids = self._trace_ids = (span_context.trace_id,
                                               format(span_context.trace_id, "032x"))
            if span_ids[0] != span_context.span_id:
                span_ids = self._span_ids = (span_context.span_id,
                                             format(span_context.span_id, "016x"))
            fields["trace_id"], fields["span_id"] = trace_ids[1], span_ids[1]
        with self._lock:
            self._sequence += 1
            event = event_type(init_id=self.init_id, sequence=self._sequence,
                               timestamp=datetime.now(UTC), node_id=self.node_id, **fields)
            self._pending.append(event)
        return event

    def commit(self) -> None:
        """Append every pending event to the store now, then notify the observers."""
        with self._commit_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                self._store.append([encode(e) for e in batch])
            except BaseException:
                with self._lock:  # not lost: the next commit tries again (and raises again)
                    self._pending[:0] = batch
                raise
            self.events.extend(batch)
            for event in batch:
                notify(self._observers, event)

    def checkpoint(self) -> None:
        """Pending events should reach the store: now, or within the flush interval."""
        if self._flush_interval <= 0 or self._writer_failed:
            self.commit()  # (after a store error in the writer: surface it here)
        elif self._writer is None:
            with self._lock:  # steps may report progress from threads of their own
                if self._writer is None:
                    self._writer = threading.Thread(target=self._write_behind, daemon=True,
                                                    name=f"llm-init-events-{self.init_id[:8]}")
                    self._writer.start()

    def record(self, event_type: type[E], /, **fields: Any) -> E:
        """Emit one event and commit it (and everything pending before it) at once."""
        event = self.emit(event_type, **fields)
        self.commit()
        return event

    def close(self) -> None:
        """Stop the writer thread and commit what is still pending."""
        self._stop.set()
        if self._writer is not None:
            self._writer.join()
        self.commit()

    def _write_behind(self) -> None:
        while not self._stop.wait(self._flush_interval):
            try:
                self.commit()
            except Exception:
                _log.debug("event writer stopped; the next commit will report why", exc_info=True)
                self._writer_failed = True
                return
