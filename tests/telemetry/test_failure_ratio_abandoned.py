"""The dashboard's failure-ratio panels, run by a real Prometheus against llm-init's own
exporter, count an abandoned initialization (its process died mid-start) as a failed one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from llm_init import InMemoryEventStore, LLMConfig, initialize_node_sync
from llm_init.events import InitializationAbandoned
from llm_init.telemetry import names
from llm_init.telemetry.backends import PrometheusBackend
from llm_init.telemetry.metrics import MetricsCallback
from tests.dashboards import promql
from tests.support.net import free_port
from tests.support.prometheus import Prometheus
from tests.support.steps import local_steps

MODEL = "tiny-llama"


def test_the_failure_ratio_panels_count_an_abandoned_initialization_as_failed(
        start_prometheus: Callable[..., Prometheus]) -> None:
    """One initialization completes in a process that, at its start, closed a dead process's
    initialization of the same model: both failure-ratio panels read 50 %."""
    port = free_port()
    prom = start_prometheus([f"127.0.0.1:{port}"], scrape_interval="1s")
    metrics = MetricsCallback(PrometheusBackend(CollectorRegistry(), port=port,
                                                addr="127.0.0.1"))
    # What the runtime records on the dead process's log when it closes it at start-up.
    metrics.on_event(InitializationAbandoned(
        init_id="dead", sequence=9, timestamp=datetime.now(UTC), model_id=MODEL,
        reason="process 7 on host-a is gone", phase="engine_init", host="host-a", pid=7,
        closed_by_pid=8))
    initialize_node_sync(LLMConfig(model_id=MODEL), event_store=InMemoryEventStore(),
                         steps=local_steps(), observers=[metrics])
    prom.wait_for(f"sum({names.METRIC_INITIALIZATIONS})", lambda r: bool(r) and float(
        r[0]["value"][1]) == 2)
    panels = {q.panel: q.expr for q in promql.panel_queries()
              if q.panel in ("Failure ratio in range", "Failure ratio by model")}
    assert len(panels) == 2
    for panel, expr in panels.items():
        result = prom.query(promql.substitute(expr, model=MODEL))
        assert [float(r["value"][1]) for r in result] == [0.5], panel
