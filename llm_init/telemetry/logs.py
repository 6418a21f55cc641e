"""Structured logs: one line per event, JSON for machines, console rendering for humans.

``LogObserver`` (added to every initialization by the runtime) writes each event to the standard
``logging`` logger ``llm_init.events`` with its fields attached: ``init_id``, ``phase``, ``hook``,
``callback``, ``step``, ``trace_id`` and ``span_id`` (absent outside a span), and the event's own
fields. At INFO that is one line per initialization (its end: outcome, total and phase
durations) and one per failure; the per-event lines are DEBUG. Until the application calls
``configure_logging`` nothing is printed below WARNING, so the library stays quiet and nearly
free (a level check per event).

``configure_logging`` (application layer) renders llm-init's lines through structlog: JSON lines,
or ``structlog.dev.ConsoleRenderer`` when the stream is a terminal. Event lines then take
structlog's fast path (a filtering bound logger writing to the stream; their fields were redacted
when the events were recorded); any other ``llm_init`` record (a telemetry warning) goes through
a ``logging`` handler with structlog's ``ProcessorFormatter`` and is redacted on the way out.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any, TextIO

from opentelemetry import trace

from llm_init.events import (
    Event,
    HookFailed,
    InitializationAbandoned,
    InitializationCompleted,
    InitializationFailed,
    PhaseCompleted,
    PhaseFailed,
    StepFailed,
    payload_of,
)
from llm_init.summary import json_safe
from llm_init.telemetry import names

FIELDS_ATTR = "llm_init_fields"  # the LogRecord attribute carrying an event's fields
# At INFO a replica's console shows one line per initialization (its end, with the outcome and
# phase durations) and one per failure; every other event is a DEBUG line.
_LEVELS: dict[type[Event], int] = {
    InitializationCompleted: logging.INFO, InitializationFailed: logging.ERROR,
    PhaseFailed: logging.ERROR, HookFailed: logging.ERROR, StepFailed: logging.ERROR,
    InitializationAbandoned: logging.WARNING,
}
_PHASE_ENDS = (PhaseCompleted, PhaseFailed)
# Large or duplicated payload fields the event store keeps and log lines leave out.
_LEFT_OUT = frozenset({"config", "context"})
# The structlog logger ``configure_logging`` set up for event lines, and its level.
_sink: Any = None
_sink_level = logging.CRITICAL + 1


class LogObserver:
    """Writes one structured log line per event (see the module docs). With ``logger`` given,
    lines always go to that ``logging`` logger; by default they take the fast path that
    ``configure_logging`` sets up, or else the ``llm_init.events`` logger. The line that ends
    an initialization also carries its ``outcome`` and ``phase_durations_s``."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger or logging.getLogger(names.LOGGER_EVENTS)
        self._use_sink = logger is None
        self._phases: dict[str, dict[str, float]] = {}

    def on_event(self, event: Event) -> None:
        if isinstance(event, _PHASE_ENDS):
            self._phases.setdefault(event.init_id, {})[event.phase] = event.duration_s
        level = _LEVELS.get(type(event), logging.DEBUG)
        if isinstance(event, HookFailed) and not event.aborted:
            level = logging.WARNING  # the policy let the initialization go on
        ended = isinstance(event, InitializationCompleted | InitializationFailed)
        phases = self._phases.pop(event.init_id, {}) if ended else None
        sink = _sink if self._use_sink else None
        if sink is not None:
            if level < _sink_level:
                return
        elif not self.logger.isEnabledFor(level):
            return
        fields = event_fields(event)
        if phases is not None:
            fields["outcome"] = "completed" if isinstance(event, InitializationCompleted) \
                else "failed"
            fields["phase_durations_s"] = phases
        if sink is not None:
            fields["logger"] = self.logger.name
            sink.log(level, event.TYPE, fields)
        else:
            self.logger.log(level, event.TYPE, extra={FIELDS_ATTR: fields})


def event_fields(event: Event) -> dict[str, Any]:
    """The fields of an event's log line: ids first, then the event's own fields."""
    fields: dict[str, Any] = {names.LOG_INIT_ID: event.init_id, "sequence": event.sequence,
                              "timestamp": event.timestamp.isoformat()}
    if event.trace_id is not None:
        fields[names.LOG_TRACE_ID] = event.trace_id
        fields[names.LOG_SPAN_ID] = event.span_id
    if event.node_id is not None:
        fields["node_id"] = event.node_id
    for key, value in payload_of(event).items():
        if key not in _LEFT_OUT:
            fields[key] = value
    return fields


_METHODS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning",
            logging.ERROR: "error", logging.CRITICAL: "critical"}


class _EventSink:
    """structlog's processor loop and writer, without a bound logger around them: event lines
    come with their fields in a fresh dict already, so nothing needs copying or binding."""

    def __init__(self, writer: Any, processors: list[Any]) -> None:
        self.writer = writer
        self.processors = processors

    def log(self, level: int, event: str, fields: dict[str, Any]) -> None:
        method = _METHODS[level]
        event_dict: Any = fields
        event_dict["event"] = event
        for processor in self.processors:
            event_dict = processor(self.writer, method, event_dict)
        self.writer.msg(event_dict)


# structlog processors, used by the formatter ``configure_logging`` installs.
EventDict = MutableMapping[str, Any]


def merge_event_fields(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """Lift an event's fields (``LogObserver``) from the log record into the line."""
    record = event_dict.get("_record")
    fields = getattr(record, FIELDS_ATTR, None)
    if fields:
        event_dict.update(fields)
    return event_dict


def add_trace_ids(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """``trace_id``/``span_id`` of the current span, for lines that don't carry their own."""
    if names.LOG_TRACE_ID not in event_dict:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            event_dict[names.LOG_TRACE_ID] = format(span_context.trace_id, "032x")
            event_dict[names.LOG_SPAN_ID] = format(span_context.span_id, "016x")
    return event_dict


def add_timestamp(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """The record's time (UTC, ISO 8601) unless the event brought its own."""
    if "timestamp" not in event_dict:
        record = event_dict.get("_record")
        created = record.created if record is not None else datetime.now(UTC).timestamp()
        event_dict["timestamp"] = datetime.fromtimestamp(created, UTC).isoformat()
    return event_dict


# Keys whose values are ours (names, ids), not user data: masked by content, never by key name
# (``key`` is the name of a changed dict key, which would otherwise look like a credential).
_OWN_KEYS = frozenset({"event", "key", "field", "level", "logger", "timestamp",
                       names.LOG_INIT_ID, names.LOG_TRACE_ID, names.LOG_SPAN_ID, names.LOG_PHASE,
                       names.LOG_HOOK, names.LOG_CALLBACK, names.LOG_STEP})


def redact(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """Mask credentials in every value (and under credential-like keys), whatever logged them."""
    for key, value in event_dict.items():
        if key.startswith("_") or value is None or isinstance(value, bool | int | float):
            continue
        event_dict[key] = json_safe(value, None if key in _OWN_KEYS else key)
    return event_dict


def configure_logging(level: int | str | None = None, *, stream: TextIO | None = None,
                      fmt: str | None = None, propagate: bool = False) -> logging.Handler:
    """Application layer: write llm-init's log lines to ``stream`` (default stderr) as JSON
    lines (``fmt="json"``), console lines (``"console"``), or by whether the stream is a
    terminal (``"auto"``, the default; ``LLM_INIT_LOG_FORMAT`` sets it too). ``level``
    defaults to ``LLM_INIT_LOG_LEVEL`` or INFO. Calling it again replaces the previous set-up;
    ``unconfigure_logging`` removes it."""
    import structlog

    global _sink, _sink_level
    stream = stream if stream is not None else sys.stderr
    fmt = (fmt or os.environ.get(names.ENV_LOG_FORMAT) or "auto").lower()
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        fmt = "console" if callable(isatty) and isatty() else "json"
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=_colors(stream))
        tail: list[Any] = []
    else:
        renderer = structlog.processors.JSONRenderer()
        tail = [structlog.processors.format_exc_info]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_log_level, structlog.stdlib.add_logger_name,
                           merge_event_fields, add_trace_ids, add_timestamp],
        processors=[*tail, redact, structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.set_name(_HANDLER_NAME)
    unconfigure_logging()
    root = logging.getLogger("llm_init")
    root.addHandler(handler)
    root.setLevel(level or os.environ.get(names.ENV_LOG_LEVEL, "INFO").upper())
    root.propagate = propagate
    _sink_level = root.getEffectiveLevel()
    sink_renderer = (renderer if fmt == "console" else
                     structlog.processors.JSONRenderer(serializer=_dumps))
    _sink = _EventSink(structlog.WriteLogger(stream),
                       [structlog.processors.add_log_level, sink_renderer])
    return handler


def unconfigure_logging() -> None:
    """Undo ``configure_logging``: llm-init logs through plain ``logging`` again."""
    global _sink, _sink_level
    _sink, _sink_level = None, logging.CRITICAL + 1
    root = logging.getLogger("llm_init")
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)


_HANDLER_NAME = "llm-init"
# Event lines hold JSON values already (events are JSON-safe); one encoder serves them all.
_ENCODER = json.JSONEncoder(check_circular=False, default=repr)


def _dumps(obj: Any, **_: Any) -> str:
    return _ENCODER.encode(obj)


def _colors(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(callable(isatty) and isatty()) and "NO_COLOR" not in os.environ
