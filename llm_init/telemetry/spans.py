"""Span helpers for the runtime: API only, so a process without the SDK pays nothing.

``tracer_for`` returns ``None`` when no SDK is configured: the dispatcher then opens no spans at
all (a no-op span costs more than a hook call). ``start`` opens a span as the current one without
the SDK's generator-based context managers, which cost more than a hook call too.
``record_error`` is OpenTelemetry's error contract (exception event, status ERROR) with the
message and stack trace redacted. ``flush`` pushes a finished initialization's spans out without
letting a slow exporter hold the caller for long.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from types import TracebackType

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span, Status, StatusCode, Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from llm_init.telemetry import health, names
from llm_init.telemetry.redaction import exception_message, exception_stacktrace

NO_SPAN = contextlib.nullcontext(INVALID_SPAN)  # stateless, so one instance serves every call
_flushes: dict[int, threading.Thread] = {}
_flushes_lock = threading.Lock()
# Told about a provider whose flush timed out (``tracing`` marks its exporters failing, so that
# neither the next flush nor the exit waits on the stalled endpoint again).
_timeout_listeners: list[Callable[[TracerProvider], None]] = []


def on_flush_timeout(listener: Callable[[TracerProvider], None]) -> None:
    """Call ``listener(provider)`` whenever a ``flush`` of ``provider`` times out."""
    if listener not in _timeout_listeners:
        _timeout_listeners.append(listener)


# The tracer of the initialization running in this context (``initialize_node`` sets it), so
# that work it starts deeper down (a step's per-node spans) goes to the provider it was given.
_initialization_tracer: ContextVar[Tracer | None] = ContextVar("llm_init_tracer", default=None)


def use_tracer(tracer: Tracer | None) -> Token[Tracer | None]:
    """Make ``tracer`` the current initialization's tracer; ``reset_tracer(token)`` undoes it."""
    return _initialization_tracer.set(tracer)


def reset_tracer(token: Token[Tracer | None]) -> None:
    _initialization_tracer.reset(token)


def current_tracer() -> Tracer:
    """The tracer of the initialization running in this context (from the ``tracer_provider``
    it was given), else llm-init's tracer from the global provider."""
    tracer = _initialization_tracer.get()
    return tracer if tracer is not None else trace.get_tracer(names.INSTRUMENTATION_NAME)


def tracer_for(provider: TracerProvider | None = None) -> Tracer | None:
    """llm-init's tracer from ``provider`` (default: the global one), or ``None`` when that
    provider is the API's no-op or proxy provider, i.e. no SDK is set up."""
    provider = provider if provider is not None else trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    return provider.get_tracer(names.INSTRUMENTATION_NAME)


def start(tracer: Tracer | None, name: str, attributes: Mapping[str, AttributeValue],
          context: Context | None = None) -> contextlib.AbstractContextManager[Span]:
    """Open ``name`` as the current span, or do nothing without a tracer. Errors are recorded
    by ``record_error`` (redacted), not by the SDK on the way out."""
    if tracer is None:
        return NO_SPAN
    return CurrentSpan(tracer, name, attributes, context)


class CurrentSpan:
    """Starts a span on entering a ``with`` block, makes it the current span inside, ends it on
    the way out.

    This is what ``Tracer.start_as_current_span`` does, minus its two generator-based context
    managers, which cost a fully observed hook call about 5 % more (``--ablate`` in
    ``benchmarks/hook_overhead.py``). Nothing is recorded on the way out of an exception;
    ``record_error`` does that.
    """

    __slots__ = ("_attributes", "_context", "_name", "_span", "_token", "_tracer")

    def __init__(self, tracer: Tracer, name: str, attributes: Mapping[str, AttributeValue],
                 context: Context | None = None) -> None:
        self._tracer, self._name, self._attributes = tracer, name, attributes
        self._context = context
        self._span: Span = INVALID_SPAN
        self._token: Token[Context] | None = None

    def __enter__(self) -> Span:
        span = self._span = self._tracer.start_span(
            self._name, context=self._context, attributes=self._attributes,
            record_exception=False, set_status_on_exception=False)
        self._token = otel_context.attach(trace.set_span_in_context(span))
        return span

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self._token is not None:
                otel_context.detach(self._token)
                self._token = None
        finally:
            self._span.end()


def record_error(span: Span, exc: BaseException, *, message: str | None = None) -> None:
    """Record ``exc`` on ``span`` (redacted) and set the span's status to ERROR."""
    if not span.is_recording():
        return
    text = message or exception_message(exc)
    span.record_exception(exc, attributes={
        "exception.message": text,
        "exception.stacktrace": exception_stacktrace(exc),
    })
    span.set_attribute(names.ATTR_ERROR_TYPE, type(exc).__qualname__)
    span.set_status(Status(StatusCode.ERROR, text))


def flush(provider: TracerProvider | None, timeout_s: float) -> bool:
    """Ask ``provider`` (an SDK provider has ``force_flush``) to export what it holds, waiting at
    most ``timeout_s``. The flush runs in a daemon thread, at most one per provider: a stuck
    exporter delays one initialization by ``timeout_s`` and the next ones not at all."""
    provider = provider if provider is not None else trace.get_tracer_provider()
    force_flush = getattr(provider, "force_flush", None)
    if not callable(force_flush):
        return True
    key = id(provider)
    with _flushes_lock:
        running = _flushes.get(key)
        if running is not None and running.is_alive():
            health.failed("traces", "the previous trace flush has not finished: the trace "
                                    "exporter is slow or its endpoint unreachable; spans may "
                                    "be lost")
            return False
        def run() -> None:
            try:
                force_flush()
            except Exception as exc:  # an exporter must not throw, but one might
                health.failed("traces", f"flushing spans failed: {exc!r}")

        thread = threading.Thread(target=run, name="llm-init-trace-flush", daemon=True)
        _flushes[key] = thread
        thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        health.failed("traces", f"spans were not exported within {timeout_s:g} s of the end of "
                                "an initialization: the trace exporter is slow or its endpoint "
                                "unreachable; the initialization went on without waiting")
        for listener in list(_timeout_listeners):
            listener(provider)
        return False
    return True
