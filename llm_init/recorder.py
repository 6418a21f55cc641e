"""Numbers, stamps, stores and fans out the events of one initialization."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from opentelemetry import trace

from llm_init.callbacks import EventObserver
from llm_init.errors import EventRejectedError, EventStoreUnavailableError
from llm_init.events import ContextChanged, Event, EventRejected, InitializationStarted
from llm_init.stores.base import EventStore
from llm_init.stores.codec import StoredEvent, encode, unencodable_field
from llm_init.telemetry.redaction import exception_message

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

    A store that cannot be reached right now (``EventStoreUnavailableError``) keeps the batch
    pending for the next commit. An event refused for good (a value the encoder or the store
    cannot hold, a sequence number already taken) is never retried: an ``EventRejected``
    naming it takes its sequence number, the rest of the batch is appended, and the next
    commit made from the initialization's own thread raises ``EventRejectedError`` (or the
    store's error, if each event went in alone), so the initialization fails and records why.
    If not even the ``EventRejected`` can be appended, nothing more is written for this
    initialization, and each commit logs what it could not record.
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
        self._refusal: Exception | None = None  # raised once, by the next commit
        self._broken = False  # the store refuses even EventRejected: stop writing
        self._stop = threading.Event()

    def emit(self, event_type: type[E], /, **fields: Any) -> E:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            fields["trace_id"] = format(span_context.trace_id, "032x")
            fields["span_id"] = format(span_context.span_id, "016x")
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
            if batch:
                self._append(batch)
            if self._refusal is not None and threading.current_thread() is not self._writer:
                refusal, self._refusal = self._refusal, None
                raise refusal

    def _append(self, batch: list[Event]) -> None:
        if self._broken:
            _log.error("event store refused an earlier event of %s: events #%d..#%d are not "
                       "recorded", self.init_id, batch[0].sequence, batch[-1].sequence)
            return
        pairs = [self._encoded(e) for e in batch]
        try:
            self._store.append([record for _, record in pairs])
            stored = [event for event, _ in pairs]
        except EventStoreUnavailableError:
            self._requeue(batch)  # not lost: the next commit tries again (and raises again)
            raise
        except Exception as exc:
            stored = self._append_one_by_one(pairs, exc)
        except BaseException:
            self._requeue(batch)
            raise
        self.events.extend(stored)
        for event in stored:
            notify(self._observers, event)

    def _requeue(self, events: list[Event]) -> None:
        with self._lock:
            self._pending[:0] = events

    def _encoded(self, event: Event) -> tuple[Event, StoredEvent]:
        """The event and its record, or an ``EventRejected`` in its place if the encoder
        refuses one of its values."""
        try:
            return event, encode(event)
        except (ValueError, TypeError, RecursionError) as exc:
            stand_in = self._stand_in(event, exc, unencodable_field(event))
            return stand_in, encode(stand_in)

    def _append_one_by_one(self, pairs: list[tuple[Event, StoredEvent]],
                           batch_error: Exception) -> list[Event]:
        """The store refused the batch: find which events it refuses, append the others and
        an ``EventRejected`` for each refused one."""
        _log.debug("event store refused a batch of %s (%s); appending its events one by one",
                   self.init_id, batch_error)
        stored: list[Event] = []
        for i, (event, record) in enumerate(pairs):
            try:
                self._store.append([record])
                stored.append(event)
                continue
            except EventStoreUnavailableError:
                self._requeue([e for e, _ in pairs[i:]])
                self.events.extend(stored)
                for done in stored:
                    notify(self._observers, done)
                raise
            except Exception as exc:
                refused: Exception = exc
            stand_in = self._stand_in(event, refused, None)
            try:
                self._store.append([encode(stand_in)])
                stored.append(stand_in)
            except Exception as exc:
                self._broken = True
                _log.error("event store refused event %s#%d (%s) and the record of that "
                           "refusal (%s): events #%d..#%d are not recorded", self.init_id,
                           event.sequence, event.TYPE, exception_message(exc), event.sequence,
                           pairs[-1][0].sequence)
                break
        if self._refusal is None:  # every event went in alone: still, the store failed
            self._refusal = batch_error
        return stored

    def _stand_in(self, event: Event, exc: BaseException, field: str | None) -> Event:
        """What is stored in place of a refused event: an ``EventRejected``, except for
        ``InitializationStarted``, which every log must begin with: it is stored without its
        free-form values (config, context, labels), and the refusal names what was left out."""
        rejected = self._rejected(event, exc, field)
        if isinstance(event, InitializationStarted):
            return dataclasses.replace(event, config={}, context={}, labels={})
        return rejected

    def _rejected(self, event: Event, exc: BaseException, field: str | None) -> EventRejected:
        """An ``EventRejected`` under ``event``'s sequence number, and the refusal to raise."""
        hook = getattr(event, "hook", None)
        callback = getattr(event, "callback", None)
        step = getattr(event, "step", None)
        if isinstance(event, ContextChanged):
            field = f"{event.field}[{event.key!r}]" if event.key is not None else event.field
            callback, step = (event.changed_by, None) if hook else (None, event.changed_by)
        rejected = EventRejected(
            init_id=event.init_id, sequence=event.sequence, timestamp=event.timestamp,
            trace_id=event.trace_id, span_id=event.span_id, node_id=event.node_id,
            rejected_type=event.TYPE, error_type=type(exc).__name__,
            message=exception_message(exc)[:2000], phase=getattr(event, "phase", None),
            hook=hook, callback=callback, step=step, field=field)
        where = ", ".join(f"{name} {value}" for name, value in (
            ("phase", rejected.phase), ("hook", hook), ("callback", callback), ("step", step),
            ("field", field)) if value)
        refusal = EventRejectedError(
            f"the event store refused {event.TYPE} #{event.sequence} of {event.init_id}"
            f"{f' ({where})' if where else ''}: {rejected.message}")
        refusal.__cause__ = exc
        if self._refusal is None:
            self._refusal = refusal
        _log.error("%s", refusal)
        return rejected

    def checkpoint(self) -> None:
        """Pending events should reach the store: now, or within the flush interval."""
        if self._flush_interval <= 0 or self._writer_failed or self._refusal is not None:
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
