"""Live status of a starting replica over HTTP: what is it doing right now?

``StatusServer`` is an event observer: it keeps the events of the initialization it watches and
answers ``GET /`` (or ``/status``) with the replay of them as JSON: outcome, current phase and
step, elapsed times, download progress and the latest engine sub-phase. It runs in a daemon
thread, on loopback unless told otherwise, so it answers while the engine blocks.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from llm_init.events import Event, StepProgressed
from llm_init.replay import ReplayedInitialization, replay

_log = logging.getLogger(__name__)


def status_document(events: list[Event], now: datetime | None = None) -> dict[str, Any]:
    """The JSON answer for the events seen so far (``{"outcome": "waiting"}`` before any)."""
    if not events:
        return {"outcome": "waiting"}
    r = replay(events)
    now = now or datetime.now(UTC)
    running = [e for e in r.timeline if e.status == "running"]
    phase_entry = next((e for e in reversed(running) if e.kind == "phase"), None)
    step_entry = next((e for e in reversed(running) if e.kind == "step"), None)
    return {
        "init_id": r.init_id,
        "model_id": r.model_id,
        "outcome": r.outcome,
        "phase": r.current_phase if r.outcome != "completed" else None,
        "step": step_entry.name if step_entry else None,
        "activity": r.current_activity,
        "elapsed_s": _elapsed(r, now),
        "phase_elapsed_s": (round((now - phase_entry.started_at).total_seconds(), 3)
                            if phase_entry else None),
        "phases": {name: round(d, 3) for name, d in r.phase_durations.items()},
        "download": _latest(events, "download"),
        "engine": _engine(events),
        "error": r.error,
        "labels": r.labels,
        "trace_id": r.trace_id,
        "last_sequence": r.last_sequence,
    }


def _elapsed(r: ReplayedInitialization, now: datetime) -> float | None:
    if r.duration_s is not None:
        return round(r.duration_s, 3)
    return round((now - r.started_at).total_seconds(), 3) if r.started_at else None


def _latest(events: list[Event], step: str) -> dict[str, Any] | None:
    for e in reversed(events):
        if isinstance(e, StepProgressed) and e.step == step:
            return dict(e.details)
    return None


def _engine(events: list[Event]) -> dict[str, Any] | None:
    subphases = {e.details["subphase"]: e.details.get("duration_s") for e in events
                 if isinstance(e, StepProgressed) and e.step == "engine"
                 and isinstance(e.details.get("subphase"), str)}
    return {"subphases": subphases} if subphases else None


class StatusServer:
    """Serves ``status_document`` of the watched events; see the module docs."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._events: list[Event] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/", "/status"):
                    self.send_error(404)
                    return
                body = json.dumps(server.document()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                _log.debug("status: " + format, *args)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        name="llm-init-status", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/status"

    def on_event(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    def document(self) -> dict[str, Any]:
        with self._lock:
            events = list(self._events)
        try:
            return status_document(events)
        except Exception as exc:  # the endpoint reports; it never takes the replica down
            return {"outcome": "unknown", "error": f"{type(exc).__name__}: {exc}",
                    "at": time.time()}

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
