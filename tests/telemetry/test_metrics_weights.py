"""The weights' metrics, scraped from the standalone endpoint: bytes, seconds and bytes/s of the
download step (per node that fetched bytes) and of the engine's own load (per worker), under one
``phase`` label."""

from __future__ import annotations

import urllib.request
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from llm_init import InMemoryEventStore, LLMConfig, NodeInitializationContext, initialize_node_sync
from llm_init.events import WeightsLoaded
from llm_init.telemetry import names
from llm_init.telemetry.backends import PrometheusBackend
from llm_init.telemetry.metrics import MetricsCallback
from tests.support.steps import EngineStep, local_steps

MODEL = "tiny-llama"


class TwoNodeDownload:
    """Node a fetches 3 MB in 2 s over two reports; node b had every file cached."""

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        report(node_id="a", stage="fetching", bytes_delta=1_000_000)
        report(node_id="a", stage="node_completed", bytes_delta=2_000_000, seconds=2.0)
        report(node_id="b", stage="node_completed", bytes_delta=0, seconds=0.1)
        ctx.download_result = "/models/tiny"


class LoadingEngine(EngineStep):
    """The engine's worker loads 4 GB in 2 s, as the vLLM engine step records it."""

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        await super().run(ctx, report)
        report.record(WeightsLoaded, bytes=4_000_000_000, files=2, seconds=2.0,
                      bytes_per_s=2e9, worker="EngineCore", node="a")


def scrape(registry: CollectorRegistry) -> dict[str, dict[tuple[str, str], float]]:
    """The weight metrics' samples by name, keyed by (phase, node)."""
    backend = PrometheusBackend(registry, port=0, addr="127.0.0.1")
    initialize_node_sync(LLMConfig(model_id=MODEL), event_store=InMemoryEventStore(),
                         steps=local_steps(download=TwoNodeDownload(), engine=LoadingEngine()),
                         observers=[MetricsCallback(backend)])
    with urllib.request.urlopen(f"http://127.0.0.1:{backend.server_port}/metrics",
                                timeout=5) as response:
        text = response.read().decode()
    out: dict[str, dict[tuple[str, str], float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("llm_init_weight") and not s.name.endswith(("_bucket",
                                                                             "_created")):
                assert s.labels["model"] == MODEL
                out.setdefault(s.name, {})[(s.labels["phase"], s.labels["node"])] = s.value
    return out


def test_both_phases_moving_weights_are_scraped_with_their_units(
        registry: CollectorRegistry) -> None:
    """Download node a: 3 MB in 2 s (1.5 MB/s); node b moved nothing and is not counted; the
    engine's worker: 4 GB in 2 s (2 GB/s)."""
    assert scrape(registry) == {
        names.METRIC_WEIGHT_BYTES: {("download", "a"): 3e6, ("engine", "a"): 4e9},
        f"{names.METRIC_WEIGHT_SECONDS}_count": {("download", "a"): 1.0, ("engine", "a"): 1.0},
        f"{names.METRIC_WEIGHT_SECONDS}_sum": {("download", "a"): 2.0, ("engine", "a"): 2.0},
        f"{names.METRIC_WEIGHT_THROUGHPUT}_count": {("download", "a"): 1.0,
                                                     ("engine", "a"): 1.0},
        f"{names.METRIC_WEIGHT_THROUGHPUT}_sum": {("download", "a"): 1.5e6,
                                                   ("engine", "a"): 2e9},
    }
