"""Specification of the SDK set-up from ``OTEL_*``: OTLP export for real, and its resilience."""

from __future__ import annotations

import gc
import logging
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider

from llm_init import InMemoryEventStore, LLMConfig, initialize_node_sync
from llm_init.telemetry import health, names, tracing
from tests.support.net import closed_port
from tests.support.otlp_receiver import OTLPReceiver, ReceivedSpan
from tests.support.steps import local_steps
from tests.telemetry.callbacks import Tracing

FLUSH_TIMEOUT_S = 0.5


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[TracerProvider]]:
    """Providers built by ``configure_tracing`` in the test, shut down after it."""
    monkeypatch.setenv(names.ENV_TRACE_FLUSH_TIMEOUT, str(FLUSH_TIMEOUT_S))
    # An earlier test's exporter thread can still fail while it shuts down, which marks traces
    # as failing process-wide; each test starts with its one warning armed.
    health.recovered("traces")
    built: list[TracerProvider] = []
    yield built
    for provider in built:
        tracing.shutdown(provider)


def configure(built: list[TracerProvider]) -> TracerProvider:
    provider = tracing.configure_tracing(set_global=False)
    assert provider is not None
    built.append(provider)
    return provider


def initialize(provider: TracerProvider, **config: object) -> str:
    settings: dict[str, object] = {"model_id": "tiny-llama", "enable_metrics": False, **config}
    ctx = initialize_node_sync(LLMConfig(**settings),  # type: ignore[arg-type]  # settings of mixed types
                               event_store=InMemoryEventStore(), steps=local_steps(),
                               tracer_provider=provider)
    return ctx.init_id


def telemetry_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
            and r.name.startswith(("llm_init", "opentelemetry"))]


def test_spans_arrive_over_otlp_http_parented_and_attributed(
        receiver: OTLPReceiver, configured: list[TracerProvider],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Spans reach an OTLP/HTTP receiver by the end of the initialization, with their tree."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "replica-7")
    init_id = initialize(configure(configured), callback_class=Tracing)
    spans = receiver.wait_for_spans(11, timeout=5)
    by_id = {s.span_id: s for s in spans}

    def parent(span: ReceivedSpan) -> str | None:
        return by_id[span.parent_span_id].name if span.parent_span_id else None

    assert sorted((s.name, parent(s)) for s in spans) == sorted([
        ("llm_init.initialize", None),
        ("llm_init.phase.pre_initialization", "llm_init.initialize"),
        ("llm_init.phase.download", "llm_init.initialize"),
        ("llm_init.hook.on_pre_download", "llm_init.phase.download"),
        ("llm_init.step.download", "llm_init.phase.download"),
        ("llm_init.phase.placement_group", "llm_init.initialize"),
        ("llm_init.hook.on_pre_placement_group", "llm_init.phase.placement_group"),
        ("llm_init.phase.engine_init", "llm_init.initialize"),
        ("llm_init.step.engine", "llm_init.phase.engine_init"),
        ("llm_init.hook.on_post_engine_init", "llm_init.phase.engine_init"),
        ("llm_init.phase.post_initialization", "llm_init.initialize"),
    ])
    assert len({s.trace_id for s in spans}) == 1
    root = next(s for s in spans if s.name == names.SPAN_INITIALIZE)
    assert (root.resource["service.name"], root.attributes[names.ATTR_INIT_ID],
            root.attributes[names.ATTR_MODEL]) == ("replica-7", init_id, "tiny-llama")
    hook = next(s for s in spans if s.name == "llm_init.hook.on_pre_placement_group")
    assert hook.attributes == {
        names.ATTR_HOOK: "on_pre_placement_group",
        names.ATTR_CALLBACK: f"{Tracing.__module__}.Tracing",
        names.ATTR_RETURNED: "false", names.ATTR_SKIPPED_DEFAULT: True,
    }


@pytest.mark.parametrize(("environ", "on"), [
    ({}, False),
    ({"OTEL_SERVICE_NAME": "replica", "OTEL_TRACES_SAMPLER": "always_on"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SDK_DISABLED": "true"},
     False),
], ids=["nothing", "only-service-and-sampler", "empty-endpoint", "endpoint", "traces-endpoint",
        "console-exporter", "otlp-exporter", "sdk-disabled"])
def test_tracing_is_off_unless_configured(environ: dict[str, str], on: bool) -> None:
    """Traces are on only where an exporter or an OTLP endpoint is named, and not disabled."""
    assert tracing.tracing_configured(environ) is on


def test_unconfigured_process_sets_up_nothing_and_warns_nothing(
        caplog: pytest.LogCaptureFixture) -> None:
    """With no ``OTEL_*`` variable (a replica of ``llm-init demo`` or ``serve run``), no provider
    is built, so nothing tries the OTLP default localhost:4318 or warns that it cannot."""
    caplog.set_level(logging.DEBUG)
    assert tracing.configure_tracing(set_global=False) is None
    initialize_node_sync(LLMConfig(model_id="tiny-llama", enable_metrics=False,
                                   callback_class=Tracing),
                         event_store=InMemoryEventStore(), steps=local_steps())
    assert telemetry_warnings(caplog) == []


def test_second_failing_set_up_in_a_process_does_not_warn_again(
        configured: list[TracerProvider], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """Set up twice in one process against a dead endpoint and an unknown exporter, tracing
    warns once about each, not once per set-up or per export."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp,zipkin")
    caplog.set_level(logging.DEBUG)
    for provider in (configure(configured), configure(configured)):
        initialize(provider, callback_class=Tracing)
    warnings = telemetry_warnings(caplog)
    assert len(warnings) == 2, warnings
    assert sorted(w.split()[0] for w in warnings) == ["OTEL_TRACES_EXPORTER='zipkin'", "cannot"]


def test_service_name_defaults_to_llm_init(monkeypatch: pytest.MonkeyPatch,
                                           configured: list[TracerProvider]) -> None:
    """Without ``OTEL_SERVICE_NAME`` the resource is named ``llm-init``."""
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    provider = configure(configured)
    assert provider.resource.attributes["service.name"] == tracing.DEFAULT_SERVICE_NAME


@pytest.mark.parametrize(("variable", "value"), [("OTEL_TRACES_EXPORTER", "none"),
                                                 ("OTEL_SDK_DISABLED", "true")])
def test_tracing_can_be_switched_off_by_environment(
        monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    """``OTEL_TRACES_EXPORTER=none`` or ``OTEL_SDK_DISABLED=true`` sets up no provider at all."""
    monkeypatch.setenv(variable, value)
    assert tracing.configure_tracing(set_global=False) is None


def test_sampler_comes_from_the_environment(
        receiver: OTLPReceiver, configured: list[TracerProvider],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``OTEL_TRACES_SAMPLER=always_off`` samples nothing, so nothing is exported."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    initialize(configure(configured))
    assert (receiver.requests, receiver.spans) == (0, [])


def test_unreachable_endpoint_costs_one_warning_and_bounded_time(
        configured: list[TracerProvider], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """With nothing listening on the OTLP port the initialization succeeds, soon, warning once."""
    endpoint = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
    provider = configure(configured)
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    initialize(provider, callback_class=Tracing)
    initialize(provider, callback_class=Tracing)
    assert time.monotonic() - started < 2 * FLUSH_TIMEOUT_S + 1.5
    (warning,) = telemetry_warnings(caplog)
    assert f"{endpoint}/v1/traces" in warning


def test_stalled_receiver_costs_one_warning_bounded_time_and_memory(
        configured: list[TracerProvider], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """A collector that never answers delays one initialization by the flush timeout at most,
    holds at most the batch queue in memory, and produces one warning."""
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "64")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "32")
    # A timeout well above what an initialization takes on a loaded machine, so that the one
    # that waits for the collector stands apart from the others.
    timeout_s = 3.0
    monkeypatch.setenv(names.ENV_TRACE_FLUSH_TIMEOUT, str(timeout_s))
    with OTLPReceiver(stall=True) as stalled:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", stalled.endpoint)
        provider = configure(configured)
        caplog.set_level(logging.WARNING)
        tracemalloc.start()
        durations = []
        for i in range(40):  # about 500 spans; the queue (64) overflows after the fifth run
            if i == 10:
                gc.collect()
                after_ten, _ = tracemalloc.get_traced_memory()
            started = time.monotonic()
            initialize(provider, callback_class=Tracing)
            durations.append(time.monotonic() - started)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - after_ten
        tracemalloc.stop()
        warnings = telemetry_warnings(caplog)
    # One initialization waits out the flush timeout; the others don't wait on the stuck one.
    assert len([d for d in durations if d >= timeout_s]) == 1, durations
    assert max(durations) < timeout_s + 2
    assert grown < 200_000  # unbounded, the last 30 runs' 350 spans would hold about 1 MB
    assert len(warnings) == 1, warnings


@pytest.mark.parametrize("environ", [{}, {"OTEL_TRACES_EXPORTER": "console"},
                                     {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}],
                         ids=["nothing", "console", "endpoint"])
def test_demo_reports_traces_as_its_replicas_set_them_up(
        monkeypatch: pytest.MonkeyPatch, environ: dict[str, str],
        configured: list[TracerProvider]) -> None:
    """The demo's "traces:" line says off exactly when its replicas (which get its ``OTEL_*``
    variables) set up no tracing."""
    from llm_init.demo.run import _traces_note

    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    provider = tracing.configure_tracing(set_global=False)
    configured.extend([provider] if provider else [])
    assert _traces_note().startswith("off") is (provider is None)
