"""Specification of a process's exit with a collector that accepts connections and never
answers: the stalled export is waited for once, by the initialization, and not again at exit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llm_init.telemetry import names
from tests.support.net import silent_server

FLUSH_TIMEOUT_S = 1.0
# The exporter's own request timeout: what the exit used to wait out after the flush gave up.
EXPORTER_TIMEOUT_S = 10

CHILD = """
import time
from llm_init import InMemoryEventStore, LLMConfig, initialize_node_sync
from llm_init.telemetry import tracing
from tests.support.steps import local_steps
from tests.telemetry.callbacks import Tracing

provider = tracing.configure_tracing(set_global=False)
started = time.monotonic()
initialize_node_sync(LLMConfig(model_id="tiny", enable_metrics=False, callback_class=Tracing),
                     event_store=InMemoryEventStore(), steps=local_steps(),
                     tracer_provider=provider)
print(time.monotonic() - started, time.time(), flush=True)
"""


@pytest.fixture
def stalled_collector() -> Iterator[str]:
    """A TCP server that accepts every connection, reads nothing and never answers."""
    with silent_server() as url:
        yield url


def test_process_exits_without_waiting_again_for_a_stalled_collector(
        stalled_collector: str) -> None:
    """The initialization waits the flush timeout once; the process then exits at once
    instead of waiting out the exporter's request timeout."""
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": stalled_collector,
           "OTEL_EXPORTER_OTLP_TIMEOUT": str(EXPORTER_TIMEOUT_S),
           names.ENV_TRACE_FLUSH_TIMEOUT: str(FLUSH_TIMEOUT_S),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                           text=True, timeout=60, check=True)
    exited = time.time()
    init_s, ended = (float(v) for v in child.stdout.split())
    assert init_s < FLUSH_TIMEOUT_S + 1.5
    assert exited - ended < 1.5, f"the process waited {exited - ended:.1f} s at exit"
    assert "no answer" in child.stderr or "were not exported" in child.stderr
