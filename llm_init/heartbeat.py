"""Liveness in the log: the heartbeat of a running initialization, and the abandonment sweep.

Liveness in the log: the heartbeat an initialization records while it runs, and the sweep
that closes, at a process's start-up, the initializations of its host whose process is gone.

The bound readers judge by is in ``llm_init.liveness``.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from datetime import UTC, datetime

from llm_init.callbacks import EventObserver
from llm_init.errors import DuplicateEventError
from llm_init.events import (
    TERMINAL_TYPES,
    Event,
    HeartbeatRecorded,
    InitializationAbandoned,
    InitializationStarted,
)
from llm_init.fleet.query import query_initializations
from llm_init.liveness import EPOCH, process_alive
from llm_init.recorder import EventRecorder, notify
from llm_init.replay import replay
from llm_init.stores.append import append_next
from llm_init.stores.base import EventStore, InitQuery

_log = logging.getLogger(__name__)
# A process silent for fewer heartbeat intervals than this is not closed, even with its pid
# gone here: it may be a live twin on another machine that shares this host name.
SWEEP_AFTER_BEATS = 2


class Heartbeat:
    """Records ``HeartbeatRecorded`` every ``interval_s`` from a daemon thread, so a blocked
    event loop (engine construction) still beats; ``interval_s == 0`` records none.

    ``stop()`` waits for a beat in flight, so none follows the initialization's end.
    A failing append is logged and the next beat tries again: a heartbeat never breaks the
    initialization it watches.
    """

    def __init__(self, recorder: EventRecorder, interval_s: float) -> None:
        self.recorder = recorder
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._beat, daemon=True,
            name=f"llm-init-heartbeat-{self.recorder.init_id[:8]}")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _beat(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.recorder.record(HeartbeatRecorded, interval_s=self.interval_s)
            except Exception:
                _log.warning("llm-init heartbeat of %s could not be recorded",
                             self.recorder.init_id, exc_info=True)


def close_abandoned(store: EventStore, *, host: str, observers: Sequence[EventObserver] = (),
                    now: datetime | None = None) -> list[InitializationAbandoned]:
    """Record ``InitializationAbandoned`` on each unfinished initialization started on
    ``host`` whose process no longer runs here and that has been silent for
    ``SWEEP_AFTER_BEATS`` heartbeat intervals; return what was recorded.

    Each event takes the next sequence number of the dead init's own log; a process (or
    another sweeper) that wrote first wins, and that init is left alone.
    """
    now = now or datetime.now(UTC)
    # Judged at the epoch, every unfinished init of the host counts as running.
    query = InitQuery(host=host, outcome="running", limit=None, now=EPOCH)
    closed = []
    for init_id in query_initializations(store, query):
        # A conflict means the process (or another sweeper) wrote meanwhile: judged again on
        # the longer log, which then usually shows it alive or closed.
        try:
            event = append_next(store, init_id,
                                lambda events, sequence: _abandonment(events, host, now))
        except DuplicateEventError:
            continue
        if isinstance(event, InitializationAbandoned):
            closed.append(event)
            notify(observers, event)
    return closed


def _abandonment(events: Sequence[Event], host: str, now: datetime
                 ) -> InitializationAbandoned | None:
    first, last = events[0], events[-1]
    if (not isinstance(first, InitializationStarted) or first.host != host
            or any(isinstance(e, TERMINAL_TYPES) for e in events)):
        return None
    r = replay(events, now=now)
    silent_s = (now - last.timestamp).total_seconds()
    interval = r.heartbeat_interval_s
    if interval and silent_s < SWEEP_AFTER_BEATS * interval:
        return None
    if process_alive(first.pid, first.timestamp):
        return None
    me = os.getpid()
    return InitializationAbandoned(
        init_id=first.init_id, sequence=last.sequence + 1, timestamp=now,
        node_id=first.node_id,
        reason=(f"process {first.pid} on {host} is gone (found at the start-up of process "
                f"{me}, {silent_s:.1f} s after its last event)"),
        phase=r.current_phase, host=host, pid=first.pid, closed_by_pid=me,
        silent_s=silent_s, model_id=first.model_id,
    )


def sweep_in_background(store: EventStore, *, host: str,
                        observers: Sequence[EventObserver] = ()) -> threading.Thread:
    """Run ``close_abandoned`` on a daemon thread, so a slow or unreachable store never
    delays the initialization starting here; failures are logged."""
    def sweep() -> None:
        try:
            for event in close_abandoned(store, host=host, observers=observers):
                _log.warning("llm-init closed initialization %s as abandoned: %s",
                             event.init_id, event.reason)
        except Exception:
            _log.warning("llm-init could not close the abandoned initializations of %s", host,
                         exc_info=True)

    thread = threading.Thread(target=sweep, daemon=True, name="llm-init-sweep")
    thread.start()
    return thread
