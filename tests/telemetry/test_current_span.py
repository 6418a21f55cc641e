"""Specification of ``spans.start``: the span of a ``with`` block, current inside, ended after."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from llm_init.telemetry import spans


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter: InMemorySpanExporter) -> trace.Tracer:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test")


def test_span_is_current_inside_the_block_and_ended_after(
        tracer: trace.Tracer, exporter: InMemorySpanExporter) -> None:
    """Inside the block the span is the current one; on the way out it ends and the previous
    current span is back."""
    before = trace.get_current_span()
    with spans.start(tracer, "work", {"a": "b"}) as span:
        assert trace.get_current_span() is span
        assert not exporter.get_finished_spans()
    assert trace.get_current_span() is before
    (finished,) = exporter.get_finished_spans()
    assert (finished.name, dict(finished.attributes or {})) == ("work", {"a": "b"})


def test_span_starts_when_the_block_is_entered(
        tracer: trace.Tracer, exporter: InMemorySpanExporter) -> None:
    """A span opened but never entered is never started, so it never goes unfinished."""
    spans.start(tracer, "never", {})
    with spans.start(tracer, "entered", {}):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["entered"]


def test_spans_opened_inside_are_children(
        tracer: trace.Tracer, exporter: InMemorySpanExporter) -> None:
    """A span opened inside the block, by llm-init or by user code, has it as parent."""
    with spans.start(tracer, "parent", {}) as parent, tracer.start_as_current_span("child"):
        pass
    child = next(s for s in exporter.get_finished_spans() if s.name == "child")
    assert child.parent is not None
    assert child.parent.span_id == parent.get_span_context().span_id


def test_an_exception_ends_the_span_and_records_nothing_itself(
        tracer: trace.Tracer, exporter: InMemorySpanExporter) -> None:
    """An exception leaving the block ends the span and restores the current span; recording
    the error (redacted) is left to ``record_error``."""
    before = trace.get_current_span()
    with pytest.raises(RuntimeError), spans.start(tracer, "failing", {}):
        raise RuntimeError("token=secret")
    assert trace.get_current_span() is before
    (finished,) = exporter.get_finished_spans()
    assert (finished.status.status_code, finished.events) == (StatusCode.UNSET, ())


def test_explicit_parent_context_is_used(
        tracer: trace.Tracer, exporter: InMemorySpanExporter) -> None:
    """With ``context`` given, the span continues that context's trace instead of the current
    one."""
    with tracer.start_as_current_span("remote") as remote:
        parent = trace.set_span_in_context(remote)
    with spans.start(tracer, "continued", {}, context=parent):
        pass
    continued = next(s for s in exporter.get_finished_spans() if s.name == "continued")
    assert continued.parent is not None
    assert continued.parent.span_id == remote.get_span_context().span_id


def test_without_a_tracer_nothing_is_opened() -> None:
    """No SDK, no tracer: the block runs under the invalid span and nothing is recorded."""
    with spans.start(None, "nothing", {}) as span:
        assert not span.is_recording()
