"""Fixtures of the telemetry tests: an SDK tracer with an in-memory exporter, a private metrics
registry, an OTLP receiver, Prometheus, and a clean slate of telemetry warnings."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from llm_init import InMemoryEventStore
from llm_init.telemetry import health, names
from llm_init.telemetry.backends import PrometheusBackend
from llm_init.telemetry.logs import unconfigure_logging
from llm_init.telemetry.metrics import MetricsCallback
from tests.support.otlp_receiver import OTLPReceiver
from tests.support.prometheus import start_prometheus  # noqa: F401  (a fixture)


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test serves metrics on the default port or inherits another's warnings or logging."""
    monkeypatch.setenv(names.ENV_METRICS_PORT, "off")
    for name in ("OTEL_SERVICE_NAME", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
                 "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_SAMPLER",
                 names.ENV_TRACEPARENT, names.ENV_METRICS_BACKEND):
        monkeypatch.delenv(name, raising=False)
    logger = logging.getLogger("llm_init")
    saved = (logger.level, logger.propagate, list(logger.handlers))
    health._failing.clear()
    yield
    health._failing.clear()
    unconfigure_logging()
    logger.setLevel(saved[0])
    logger.propagate = saved[1]
    logger.handlers[:] = saved[2]


@pytest.fixture
def store() -> InMemoryEventStore:
    return InMemoryEventStore()


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """An SDK provider of the test's own (never the global one) exporting to ``exporter``."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> MetricsCallback:
    """A metrics callback on a private registry, serving nothing."""
    return MetricsCallback(PrometheusBackend(registry, port=None))


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running
