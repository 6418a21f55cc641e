"""OpenTelemetry SDK set-up for the application layer, from the standard ``OTEL_*`` variables.

Library code depends on the OpenTelemetry API only; the CLI, the demo and the Serve integration
call ``configure_tracing()`` once per process. Tracing is off unless configured (see
``tracing_configured``): a process with no ``OTEL_TRACES_EXPORTER`` and no
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT`` exports nothing and warns about nothing, instead of
sending to the OTLP default ``localhost:4318`` where no collector may listen. It honours:

- ``OTEL_SDK_DISABLED``; ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` (default service
  name ``llm-init``);
- ``OTEL_TRACES_EXPORTER``: ``otlp`` (default), ``console``, ``none``, comma-separated;
- ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``, ``..._HEADERS``, ``..._TIMEOUT``, ``..._PROTOCOL``
  (``http/protobuf``; ``grpc`` when ``opentelemetry-exporter-otlp-proto-grpc`` is installed);
- ``OTEL_TRACES_SAMPLER``/``OTEL_TRACES_SAMPLER_ARG`` and the batch processor's ``OTEL_BSP_*``.

Every exporter sits behind a batch processor and a ``ResilientSpanExporter``: an endpoint that
refuses or stalls costs one warning and bounded time (the runtime waits at most
``LLM_INIT_TRACE_FLUSH_TIMEOUT_S`` for the flush at the end of an initialization; the processor's
queue bounds memory), never a failed initialization. A flush that timed out marks the provider's
exporters failing, and the exit hook waits at most the same timeout for the remaining spans, and
not at all when every exporter is failing: a stalled collector never holds the process at exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping, Sequence

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)

from llm_init.telemetry import health, names, spans
from llm_init.telemetry.redaction import redact_text

DEFAULT_SERVICE_NAME = "llm-init"
DEFAULT_COOLDOWN_S = 30.0
_EXPORTER_LOGGERS = ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                     "opentelemetry.exporter.otlp.common.http",
                     "opentelemetry.exporter.otlp.proto.grpc.exporter")
_QUEUE_LOGGER = "opentelemetry.sdk._shared_internal"
_exporting = threading.local()  # the ResilientSpanExporter whose export runs on this thread
_log = logging.getLogger(__name__)


class ResilientSpanExporter(SpanExporter):
    """Wraps a span exporter so that failures cost one warning and bounded time.

    A failed export (an error result, an exception, or the wrapped exporter's first retry
    warning) opens a circuit: batches are dropped at once for ``cooldown_s`` instead of being
    retried against a dead endpoint, then export is tried again. The wrapped exporter's own log
    records are folded into that one warning (see ``health``)."""

    def __init__(self, inner: SpanExporter, endpoint: str,
                 cooldown_s: float = DEFAULT_COOLDOWN_S) -> None:
        self.inner = inner
        self.endpoint = redact_text(endpoint)
        self.cooldown_s = cooldown_s
        self.dropped = 0
        self._open_until = 0.0
        self._shut_down = False

    @property
    def failing(self) -> bool:
        return time.monotonic() < self._open_until

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.failing or self._shut_down:
            self.dropped += len(spans)
            return SpanExportResult.FAILURE
        _exporting.current = self
        try:
            result = self.inner.export(spans)
        except Exception as exc:
            self.trip(repr(exc))
            return SpanExportResult.FAILURE
        finally:
            _exporting.current = None
        if result is SpanExportResult.SUCCESS:
            self._open_until = 0.0
            health.recovered("traces")
        else:
            self.trip("the exporter reported a failure")
            self.dropped += len(spans)
        return result

    def stalled(self, timeout_s: float) -> None:
        """A flush waited ``timeout_s`` in vain: treat the endpoint as failing from now on."""
        self.trip(f"no answer within {timeout_s:g} s")

    def trip(self, reason: str) -> None:
        """Open the circuit and report (once per outage) why."""
        self._open_until = time.monotonic() + self.cooldown_s
        health.failed("traces", f"cannot export spans to {self.endpoint}: {reason}. "
                                f"Initializations go on; spans are dropped for "
                                f"{self.cooldown_s:g} s at a time until the endpoint answers")

    def abort(self) -> None:
        """Give up on a failing endpoint now: stop the wrapped exporter's retries."""
        if not self._shut_down:
            self._shut_down = True
            self.inner.shutdown()

    @property
    def aborted(self) -> bool:
        return self._shut_down

    def shutdown(self) -> None:
        if not self._shut_down:
            self._shut_down = True
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _ExporterLogFilter(logging.Filter):
    """Folds the SDK's export warnings into one: an exporter's retry and failure messages trip
    the ``ResilientSpanExporter`` running it; the batch queue's "Queue full" (logged once per
    dropped span) becomes one warning per outage."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        if record.name == _QUEUE_LOGGER:
            if not str(record.msg).startswith("Queue full"):
                return True
            health.failed("traces", "the span queue is full (OTEL_BSP_MAX_QUEUE_SIZE): new spans "
                                    "are dropped until the exporter catches up")
            return False
        current: ResilientSpanExporter | None = getattr(_exporting, "current", None)
        if current is None:
            return True
        current.trip(record.getMessage())
        return False


_filter = _ExporterLogFilter()
_wrapped: weakref.WeakSet[ResilientSpanExporter] = weakref.WeakSet()
_owned: weakref.WeakKeyDictionary[TracerProvider, list[ResilientSpanExporter]] = (
    weakref.WeakKeyDictionary())
_shut_down: weakref.WeakSet[TracerProvider] = weakref.WeakSet()


def _flush_timed_out(provider: object) -> None:
    for exporter in _owned.get(provider, ()) if isinstance(provider, TracerProvider) else ():
        exporter.stalled(flush_timeout_s())


spans.on_flush_timeout(_flush_timed_out)


def flush_timeout_s() -> float:
    """``LLM_INIT_TRACE_FLUSH_TIMEOUT_S``: the longest wait for spans, at the end of an
    initialization and at exit."""
    raw = os.environ.get(names.ENV_TRACE_FLUSH_TIMEOUT, "").strip()
    try:
        value = float(raw) if raw else names.DEFAULT_TRACE_FLUSH_TIMEOUT_S
    except ValueError:
        return names.DEFAULT_TRACE_FLUSH_TIMEOUT_S
    return value if value >= 0 else names.DEFAULT_TRACE_FLUSH_TIMEOUT_S


def configure_tracing(*, set_global: bool = True,
                      service_name: str = DEFAULT_SERVICE_NAME) -> TracerProvider | None:
    """Build an SDK ``TracerProvider`` from the ``OTEL_*`` variables (see the module docs) and,
    with ``set_global``, install it as the global provider. Returns ``None`` when tracing is
    disabled or not configured (``tracing_configured``) or no exporter is usable (the API's
    no-op tracer then costs nothing). If a global SDK provider is already installed (by the
    application or by vLLM) it is returned unchanged, since a process can have only one."""
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    existing = trace.get_tracer_provider()
    if set_global and isinstance(existing, TracerProvider):
        return existing
    if not tracing_configured():
        return None
    exporters = _exporters()
    if not exporters:
        return None
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service_name}))
    # The SDK's own exit hook joins the batch worker without a bound, and a worker stuck in an
    # export to a stalled collector holds it until the exporter's timeout; ours is bounded.
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    _owned[provider] = exporters
    atexit.register(_shutdown_at_exit, weakref.ref(provider))
    for exporter in exporters:
        provider.add_span_processor(_batch_processor(exporter))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider


# Setting any of these asks for traces; without one, tracing stays off.
TRACING_VARIABLES = ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                     "OTEL_EXPORTER_OTLP_ENDPOINT")


def tracing_configured(environ: Mapping[str, str] | None = None) -> bool:
    """The rule every llm-init process follows: traces are on when ``OTEL_TRACES_EXPORTER`` or
    an OTLP endpoint (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``)
    is set to a non-empty value, and off otherwise or when ``OTEL_SDK_DISABLED=true``."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(env.get(name, "").strip() for name in TRACING_VARIABLES)


def shutdown(provider: TracerProvider, timeout_s: float | None = None) -> bool:
    """Flush and stop ``provider``, waiting at most ``timeout_s`` (default
    ``LLM_INIT_TRACE_FLUSH_TIMEOUT_S``); exporters whose endpoint is failing give up at once
    instead of retrying until their timeout, and when all of the provider's are failing it is
    not waited for at all. Returns whether the shutdown finished in time."""
    wait_s = flush_timeout_s() if timeout_s is None else timeout_s
    if provider in _shut_down:
        return True
    _shut_down.add(provider)
    owned = _owned.get(provider)
    for exporter in list(_wrapped):
        if exporter.failing:
            exporter.abort()
    if owned and all(e.failing or e.aborted for e in owned):
        wait_s = 0.0
    # A worker stuck in an export is joined without a bound by the SDK: shut down on a daemon
    # thread and stop waiting after ``wait_s``.
    thread = threading.Thread(target=provider.shutdown, name="llm-init-trace-shutdown",
                              daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no new threads this late in the interpreter's exit
        for exporter in owned or ():
            exporter.abort()
        return False
    thread.join(wait_s)
    return not thread.is_alive()


def _batch_processor(exporter: SpanExporter) -> BatchSpanProcessor:
    try:
        return BatchSpanProcessor(exporter)  # reads OTEL_BSP_*
    except ValueError as exc:
        health.failed("traces-config", f"the OTEL_BSP_* settings are inconsistent ({exc}); "
                                       f"using the batch processor's defaults")
        return BatchSpanProcessor(exporter, max_queue_size=2048, schedule_delay_millis=5000,
                                  max_export_batch_size=512, export_timeout_millis=30000)


def _exporters() -> list[ResilientSpanExporter]:
    names = [n.strip().lower() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    out: list[ResilientSpanExporter] = []
    for name in dict.fromkeys(n for n in names if n):
        inner: SpanExporter | None
        if name == "none":
            continue
        if name == "console":
            inner, endpoint = ConsoleSpanExporter(), "the console"
        elif name == "otlp":
            inner, endpoint = _otlp_exporter()
        else:
            health.failed("traces-config", f"OTEL_TRACES_EXPORTER={name!r} is not supported "
                                           f"(otlp, console, none); ignored")
            continue
        if inner is not None:
            wrapped = ResilientSpanExporter(inner, endpoint)
            _wrapped.add(wrapped)
            out.append(wrapped)
    if out:
        _install_log_filter()
    return out


def _otlp_exporter() -> tuple[SpanExporter | None, str]:
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]  # an optional extra
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            health.failed("traces-config", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs the package "
                                           "opentelemetry-exporter-otlp-proto-grpc; no spans "
                                           "are exported")
            return None, ""
        grpc_exporter: SpanExporter = GrpcExporter()
        return grpc_exporter, _endpoint(default="http://localhost:4317", path="")
    if protocol != "http/protobuf":
        health.failed("traces-config", f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not "
                                       f"supported (http/protobuf, grpc); using http/protobuf")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(), _endpoint(default="http://localhost:4318", path="v1/traces")


def _endpoint(default: str, path: str) -> str:
    specific = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if specific:
        return specific
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or default
    return f"{base.rstrip('/')}/{path}" if path else base


def _install_log_filter() -> None:
    for name in (*_EXPORTER_LOGGERS, _QUEUE_LOGGER):
        logger = logging.getLogger(name)
        if _filter not in logger.filters:
            logger.addFilter(_filter)


def _shutdown_at_exit(ref: weakref.ref[TracerProvider]) -> None:
    provider = ref()
    if provider is not None:
        shutdown(provider)
