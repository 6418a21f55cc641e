"""One stand-in LLM replica: a single real initialization (stub steps, real ``MetricsCallback``),
then it waits to be released, the way a replica process serves after its start-up.

    python -m tests.dashboards.replica --mode ok --port 9464 --go /tmp/go --release /tmp/r1

Modes: ``ok`` finishes, ``fail`` fails in the engine step (a crash-looping replica), ``stuck``
blocks in the placement group phase until released. The download step waits for the ``go``
file (so the test can first see the replica scraped), then reports its bytes in chunks over
about two seconds, so that a scraper sees the download progress, and its node's completion; the
engine step reports every engine sub-phase and its worker's weight load. ``run_replica`` is
also called in Ray tasks.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from llm_init import (
    DefaultSteps,
    InMemoryEventStore,
    LLMConfig,
    NodeInitializationContext,
    ReplicaLaunch,
    ReplicaReady,
    initialize_node_sync,
)
from llm_init.events import ArtifactMissed, ArtifactRestored, WeightsLoaded
from llm_init.telemetry import names
from llm_init.telemetry.metrics import MetricsCallback
from tests.support.steps import EngineStep, FailingStep, SettingStep

MODEL = "tiny-llama"
CHUNK_BYTES = 4 << 20
CHUNKS = 5
CHUNK_INTERVAL_S = 0.4
SUBPHASES = ((names.SUBPHASE_WEIGHT_LOADING, 1.5), (names.SUBPHASE_KV_CACHE_PROFILING, 0.4),
             (names.SUBPHASE_KV_CACHE_ALLOCATION, 0.2), (names.SUBPHASE_TORCH_COMPILE, 6.0),
             (names.SUBPHASE_CUDA_GRAPH_CAPTURE, 2.0))
MODES = ("ok", "fail", "stuck")
ARTIFACT_BYTES = 2 << 20


class Warmup:
    """A user callback whose hooks take a little time, for the hook panels."""

    def on_pre_download(self, ctx: NodeInitializationContext) -> None:
        time.sleep(0.01)

    def on_post_engine_init(self, ctx: NodeInitializationContext) -> None:
        time.sleep(0.02)


@dataclass
class SlowDownloadStep:
    """Once ``go`` exists, reports ``CHUNKS`` byte increments, ``CHUNK_INTERVAL_S`` apart; then
    the warm start's outcome, as the artifact restore records it: a hit, or a miss."""

    go: Path
    warm_start: str | None = None

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        while not self.go.exists():
            await asyncio.sleep(0.05)
        for _ in range(CHUNKS):
            await asyncio.sleep(CHUNK_INTERVAL_S)
            report(**{names.DETAIL_BYTES_DELTA: CHUNK_BYTES}, node_id="node-1",
                   stage="fetching")
        report(**{names.DETAIL_BYTES_DELTA: 0}, node_id="node-1", stage="node_completed",
               seconds=CHUNKS * CHUNK_INTERVAL_S)
        ctx.download_result = {"path": "/models/tiny", "bytes": CHUNKS * CHUNK_BYTES}
        artifact = {"key": "0" * 24, "store": "s3://warm/prefix", "node": "node-1"}
        if self.warm_start == "hit":
            report.record(ArtifactRestored, bytes=ARTIFACT_BYTES, files=12, seconds=0.3,
                          **artifact)
        elif self.warm_start == "miss":
            report.record(ArtifactMissed, reason="no_match", seconds=0.05, **artifact)


@dataclass
class WeightsEngineStep(EngineStep):
    """The engine step's sub-phases, then its worker's weight load, as vLLM's engine step
    records it."""

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        await super().run(ctx, report)
        report.record(WeightsLoaded, bytes=CHUNKS * CHUNK_BYTES, files=2, seconds=1.5,
                      bytes_per_s=CHUNKS * CHUNK_BYTES / 1.5, worker="EngineCore",
                      node="node-1")


@dataclass
class WaitingStep:
    """A placement group that never becomes ready until ``release`` exists."""

    release: Path

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        while not self.release.exists():
            await asyncio.sleep(0.05)
        ctx.placement_group = {"bundles": [{"CPU": 1}]}


def steps_for(mode: str, go: Path, release: Path) -> DefaultSteps:
    placement: Any = (WaitingStep(release) if mode == "stuck"
                      else SettingStep("placement_group", {"bundles": [{"CPU": 1}]}))
    engine: Any = (FailingStep("CUDA out of memory while allocating the KV cache")
                   if mode == "fail" else WeightsEngineStep(SUBPHASES))
    # The completing replica started warm, the failing one missed: both show on the panels.
    warm_start = {"ok": "hit", "fail": "miss"}.get(mode)
    return DefaultSteps(download=SlowDownloadStep(go, warm_start), placement_group=placement,
                        engine=engine)


def run_replica(mode: str, go: Path, release: Path, metrics: MetricsCallback, *,
                model: str = MODEL) -> str:
    """One initialization; returns its outcome (``completed`` or ``failed``)."""
    # By import path, so that the callback label names this module even when it runs as
    # __main__.
    config = LLMConfig(model_id=model, callback_class="tests.dashboards.replica:Warmup")
    # As a Serve replica does: it was scheduled and booted before the initialization, and
    # passes its first health check after it.
    now = time.time()
    launch = ReplicaLaunch(app_built_at=now - 3.0, process_started_at=now - 2.0)
    try:
        ctx = initialize_node_sync(config, event_store=InMemoryEventStore(), launch=launch,
                                   steps=steps_for(mode, go, release), observers=[metrics])
    except Exception:
        return names.OUTCOME_FAILED
    metrics.on_event(ReplicaReady(init_id=ctx.init_id, sequence=10_000,
                                  timestamp=datetime.now(UTC), since_initialization_s=0.4))
    return names.OUTCOME_COMPLETED


def wait_for(path: Path) -> None:
    while not path.exists():
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    from prometheus_client import CollectorRegistry

    from llm_init.telemetry.backends import PrometheusBackend

    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--go", type=Path, required=True)
    parser.add_argument("--release", type=Path, required=True)
    args = parser.parse_args(argv)
    metrics = MetricsCallback(PrometheusBackend(CollectorRegistry(), port=args.port,
                                                addr="127.0.0.1"))
    outcome = run_replica(args.mode, args.go, args.release, metrics)
    print(outcome, flush=True)
    wait_for(args.release)  # keep serving /metrics until the test lets the process go
    return 0


if __name__ == "__main__":
    sys.exit(main())
