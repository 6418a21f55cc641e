"""A real Prometheus scrapes the standalone metrics endpoint while an initialization runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from llm_init import InMemoryEventStore, LLMConfig, NodeInitializationContext, initialize_node_sync
from llm_init.telemetry import names
from llm_init.telemetry.backends import PrometheusBackend
from llm_init.telemetry.metrics import MetricsCallback
from tests.support.net import free_port
from tests.support.prometheus import Prometheus
from tests.support.steps import CallingStep, local_steps

PHASES = {"pre_initialization", "download", "placement_group", "engine_init",
          "post_initialization"}


def test_prometheus_scrapes_phase_durations_during_and_after_an_initialization(
        start_prometheus: Callable[..., Prometheus]) -> None:
    """Mid-initialization Prometheus sees the finished phases and the one in progress; after
    it, a PromQL query of the phase histogram returns every phase."""
    port = free_port()
    prom = start_prometheus([f"127.0.0.1:{port}"], scrape_interval="1s")
    metrics = MetricsCallback(PrometheusBackend(CollectorRegistry(), port=port,
                                                addr="127.0.0.1"))

    async def engine(ctx: NodeInitializationContext) -> list[str]:
        # The engine "starts" once Prometheus has scraped this very initialization.
        seen = await asyncio.to_thread(
            prom.wait_for, f'{names.METRIC_IN_PROGRESS}{{phase="engine_init"}} == 1')
        ctx.engine = "engine"
        return [r["metric"]["phase"] for r in seen]

    step = CallingStep(engine)
    initialize_node_sync(LLMConfig(model_id="tiny-llama"), event_store=InMemoryEventStore(),
                         steps=local_steps(engine=step), observers=[metrics])
    assert step.calls == [["engine_init"]]
    result = prom.wait_for(
        f"sum by (phase) ({names.METRIC_PHASE_DURATION}_count{{model=\"tiny-llama\"}})",
        lambda r: {x["metric"]["phase"] for x in r} == PHASES)
    assert {x["metric"]["phase"]: x["value"][1] for x in result} == dict.fromkeys(PHASES, "1")
