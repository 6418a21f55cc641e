"""Trace context crosses process boundaries: a real child process continues the parent's trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llm_init.telemetry import names, propagation
from tests.support.otlp_receiver import OTLPReceiver

ROOT = Path(__file__).resolve().parents[2]
CHILD = """
import json, sys
from llm_init.telemetry import propagation, tracing
provider = tracing.configure_tracing(set_global=False)
carrier = json.loads(sys.argv[1]) if len(sys.argv) > 1 else None
with propagation.continued(carrier):
    with provider.get_tracer("child").start_as_current_span("download on node 2"):
        pass
tracing.shutdown(provider)
"""


def run_child(receiver: OTLPReceiver, env: dict[str, str], *args: str) -> None:
    child_env = {k: v for k, v in os.environ.items() if k != names.ENV_TRACEPARENT}
    child_env.update(env, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                     PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-c", CHILD, *args], env=child_env, check=True, timeout=60)


def test_child_process_started_with_traceparent_continues_the_trace(
        provider: TracerProvider, receiver: OTLPReceiver) -> None:
    """``env_vars()`` in the parent and ``continued()`` in the child give one trace, with the
    child's span under the parent's."""
    with provider.get_tracer("parent").start_as_current_span("llm_init.phase.download") as span:
        env = propagation.env_vars()
        parent = span.get_span_context()
    run_child(receiver, env)
    (child,) = receiver.wait_for_spans(1)
    assert (child.name, child.trace_id, child.parent_span_id) == (
        "download on node 2", format(parent.trace_id, "032x"), format(parent.span_id, "016x"))


def test_carrier_passed_as_an_argument_continues_the_trace(
        provider: TracerProvider, receiver: OTLPReceiver) -> None:
    """A carrier dict (as a Ray task would receive it) works like the environment does."""
    with provider.get_tracer("parent").start_as_current_span("llm_init.step.download") as span:
        carrier = propagation.inject()
        parent = span.get_span_context()
    run_child(receiver, {}, json.dumps(carrier))
    (child,) = receiver.wait_for_spans(1)
    assert (child.trace_id, child.parent_span_id) == (
        format(parent.trace_id, "032x"), format(parent.span_id, "016x"))


def test_env_vars_follow_the_w3c_traceparent_format(provider: TracerProvider) -> None:
    """``TRACEPARENT`` is ``00-<trace id>-<span id>-<flags>``, as vLLM and other tools read it."""
    with provider.get_tracer("t").start_as_current_span("s") as span:
        env = propagation.env_vars()
    ctx = span.get_span_context()
    assert env == {names.ENV_TRACEPARENT:
                   f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"}
    assert ctx.trace_flags.sampled


def test_without_a_span_nothing_is_injected_or_extracted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No active span gives an empty carrier; a malformed ``TRACEPARENT`` gives no parent."""
    assert propagation.inject() == {}
    monkeypatch.setenv(names.ENV_TRACEPARENT, "not-a-traceparent")
    assert propagation.context_from_env() is None


def test_continued_restores_the_previous_context(provider: TracerProvider,
                                                 exporter: InMemorySpanExporter) -> None:
    """Leaving ``continued()`` makes the previous context current again."""
    with provider.get_tracer("t").start_as_current_span("outer") as outer:
        carrier = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
        with propagation.continued(carrier):
            assert trace.get_current_span().get_span_context().span_id == 0xb7ad6b7169203331
        assert trace.get_current_span() is outer


def test_child_process_started_inside_in_environment_continues_the_trace(
        provider: TracerProvider, receiver: OTLPReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A child started inside ``in_environment()`` inherits ``TRACEPARENT`` and continues the
    trace; afterwards this process's environment is as it was."""
    monkeypatch.delenv(names.ENV_TRACEPARENT, raising=False)
    monkeypatch.setenv(names.ENV_TRACESTATE, "kept=1")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT),
                                                      os.environ.get("PYTHONPATH", "")]))
    with provider.get_tracer("parent").start_as_current_span("llm_init.step.engine") as span:
        with propagation.in_environment() as carrier:
            subprocess.run([sys.executable, "-c", CHILD], check=True, timeout=60)
        parent = span.get_span_context()
    (child,) = receiver.wait_for_spans(1)
    assert (child.trace_id, child.parent_span_id) == (
        format(parent.trace_id, "032x"), format(parent.span_id, "016x"))
    assert set(carrier) == {"traceparent"}
    assert names.ENV_TRACEPARENT not in os.environ
    assert os.environ[names.ENV_TRACESTATE] == "kept=1"
