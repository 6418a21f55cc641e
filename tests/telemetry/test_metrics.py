"""Specification of ``MetricsCallback``: every metric, its labels, and how it never gets in the
way."""

from __future__ import annotations

import logging
import socket
import time
import urllib.request
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry

from llm_init import (
    InMemoryEventStore,
    LLMConfig,
    NodeInitializationContext,
    ReplicaLaunch,
    ReplicaReady,
    StepError,
    initialize_node_sync,
)
from llm_init.telemetry import names
from llm_init.telemetry.backends import PrometheusBackend, select_backend
from llm_init.telemetry.gpu import GpuMemorySampler
from llm_init.telemetry.metrics import MetricsCallback
from tests.support.net import free_port
from tests.support.nvml import StandInNvml
from tests.support.steps import CallingStep, EngineStep, FailingStep, local_steps
from tests.telemetry.callbacks import Tracing

MODEL = "tiny-llama"
PHASES = ["pre_initialization", "download", "placement_group", "engine_init",
          "post_initialization"]


def initialize(metrics: MetricsCallback | None, *, model: str = MODEL, **steps: Any) -> None:
    initialize_node_sync(LLMConfig(model_id=model, callback_class=Tracing),
                         event_store=InMemoryEventStore(), steps=local_steps(**steps),
                         observers=[metrics] if metrics else [])


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_each_phase_is_timed_by_phase_model_and_outcome(
        metrics: MetricsCallback, registry: CollectorRegistry) -> None:
    """One observation per phase, labelled with the phase, the model and ``completed``."""
    initialize(metrics)
    counts = {p: value(registry, f"{names.METRIC_PHASE_DURATION}_count", phase=p, model=MODEL,
                       outcome="completed") for p in PHASES}
    assert counts == dict.fromkeys(PHASES, 1.0)


def test_phase_buckets_run_from_a_tenth_of_a_second_to_an_hour(
        metrics: MetricsCallback, registry: CollectorRegistry) -> None:
    """The phase histogram's buckets start at 0.1 s and end at 3600 s (then +Inf)."""
    initialize(metrics)
    buckets = [s.labels["le"] for m in registry.collect() if m.name ==
               names.METRIC_PHASE_DURATION for s in m.samples if s.name.endswith("_bucket")
               and s.labels["phase"] == "download"]
    assert (buckets[0], buckets[-2], buckets[-1]) == ("0.1", "3600.0", "+Inf")


def test_failed_phase_and_initialization_are_counted_as_failed(
        metrics: MetricsCallback, registry: CollectorRegistry) -> None:
    """A failing download step gives a failed download phase and a failed initialization."""
    with pytest.raises(StepError):
        initialize(metrics, download=FailingStep("disk full"))
    assert (value(registry, f"{names.METRIC_PHASE_DURATION}_count", phase="download",
                  model=MODEL, outcome="failed"),
            value(registry, names.METRIC_INITIALIZATIONS, model=MODEL, outcome="failed"),
            value(registry, names.METRIC_INITIALIZATIONS, model=MODEL, outcome="completed")
            ) == (1.0, 1.0, None)


def test_initializations_are_counted_by_model_and_outcome(
        metrics: MetricsCallback, registry: CollectorRegistry) -> None:
    """Two completed initializations of one model count two."""
    initialize(metrics)
    initialize(metrics)
    assert value(registry, names.METRIC_INITIALIZATIONS, model=MODEL, outcome="completed") == 2


def test_hooks_are_timed_by_hook_and_callback_class(
        metrics: MetricsCallback, registry: CollectorRegistry) -> None:
    """Each hook invocation is one observation labelled with hook and callback class."""
    initialize(metrics)
    callback = f"{Tracing.__module__}.Tracing"
    observed = {s.labels["hook"]: (s.labels["callback"], s.value)
                for m in registry.collect() if m.name == names.METRIC_HOOK_DURATION
                for s in m.samples if s.name.endswith("_count")}
    assert observed == {"on_pre_download": (callback, 1.0),
                        "on_pre_placement_group": (callback, 1.0),
                        "on_post_engine_init": (callback, 1.0)}


def test_in_progress_gauge_is_one_during_a_phase_and_zero_after(
        metrics: MetricsCallback, registry: CollectorRegistry) -> None:
    """While the engine step runs, one initialization is in ``engine_init``; none afterwards."""

    def gauge(ctx: NodeInitializationContext) -> dict[str, float | None]:
        ctx.engine = "engine"
        return {p: value(registry, names.METRIC_IN_PROGRESS, model=MODEL, phase=p)
                for p in ("download", "engine_init")}

    engine = CallingStep(gauge)
    initialize(metrics, engine=engine)
    assert engine.calls == [{"download": 0.0, "engine_init": 1.0}]
    assert value(registry, names.METRIC_IN_PROGRESS, model=MODEL, phase="engine_init") == 0.0


def test_download_bytes_add_up_the_download_steps_increments(
        metrics: MetricsCallback, registry: CollectorRegistry) -> None:
    """``bytes_delta`` reports of the download step are summed per model."""
    initialize(metrics)  # DownloadStep reports 1000 + 2000 + 3000
    assert value(registry, names.METRIC_DOWNLOAD_BYTES, model=MODEL) == 6000.0


def test_engine_subphases_reported_by_the_engine_step_are_timed(
        metrics: MetricsCallback, registry: CollectorRegistry) -> None:
    """Known sub-phases reported by the engine step are observed; unknown names are dropped."""
    initialize(metrics, engine=EngineStep([(names.SUBPHASE_WEIGHT_LOADING, 1.5),
                                           (names.SUBPHASE_CUDA_GRAPH_CAPTURE, 0.25),
                                           ("made_up_subphase", 9.0)]))
    sums = {s.labels["subphase"]: s.value for m in registry.collect()
            if m.name == names.METRIC_ENGINE_SUBPHASE_DURATION for s in m.samples
            if s.name.endswith("_sum")}
    assert sums == {names.SUBPHASE_WEIGHT_LOADING: 1.5, names.SUBPHASE_CUDA_GRAPH_CAPTURE: 0.25}


def startup_sums(registry: CollectorRegistry) -> dict[str, float]:
    return {s.labels["segment"]: s.value for m in registry.collect()
            if m.name == names.METRIC_REPLICA_STARTUP for s in m.samples
            if s.name.endswith("_sum") and s.labels["model"] == MODEL}


def test_a_serve_replicas_launch_and_readiness_are_timed_by_segment(
        metrics: MetricsCallback, registry: CollectorRegistry) -> None:
    """Scheduling and boot (from ``ReplicaLaunched``) and the wait for the first health check
    (``ReplicaReady``) are observed per model."""
    now = time.time()
    initialize_node_sync(LLMConfig(model_id=MODEL), event_store=InMemoryEventStore(),
                         steps=local_steps(), observers=[metrics],
                         launch=ReplicaLaunch(app_built_at=now - 9.0, process_started_at=now - 6.0))
    metrics.on_event(ReplicaReady(init_id="i", sequence=99, timestamp=datetime.now(UTC),
                                  since_initialization_s=2.5))
    sums = startup_sums(registry)
    assert sums.keys() == {"scheduling", "boot", "ready"}
    assert abs(sums["scheduling"] - 3.0) < 0.01
    assert 6.0 <= sums["boot"] < 7.0
    assert sums["ready"] == 2.5


def test_without_a_launch_there_are_no_startup_series(
        metrics: MetricsCallback, registry: CollectorRegistry) -> None:
    initialize(metrics)
    assert startup_sums(registry) == {}


def test_without_a_gpu_there_are_no_gpu_series(
        metrics: MetricsCallback, registry: CollectorRegistry) -> None:
    """On this machine (no GPU, no NVML driver) GPU memory is absent, not zero."""
    initialize(metrics)
    samples = [s for m in registry.collect() if m.name == names.METRIC_GPU_MEMORY_USED
               for s in m.samples]
    assert samples == []


def test_gpu_memory_is_sampled_at_each_phase_boundary_on_visible_gpus(
        registry: CollectorRegistry) -> None:
    """With NVML, each visible GPU's used memory is recorded when each phase starts and ends."""
    nvml = StandInNvml(used=[1 << 30, 3 << 30])
    metrics = MetricsCallback(PrometheusBackend(registry, port=None),
                              gpu=GpuMemorySampler(nvml, visible_devices="1"))
    initialize(metrics)
    samples = {(s.labels["phase"], s.labels["boundary"], s.labels["gpu"]): s.value
               for m in registry.collect() if m.name == names.METRIC_GPU_MEMORY_USED
               for s in m.samples}
    assert samples == {(p, b, "1"): float(3 << 30) for p in PHASES for b in ("start", "end")}


def test_runtime_adds_metrics_by_default_on_the_global_registry() -> None:
    """Without an explicit callback, an initialization updates the process's default registry."""
    model = "default-registry-model"
    initialize(None, model=model)
    assert prometheus_client.REGISTRY.get_sample_value(
        names.METRIC_INITIALIZATIONS, {"model": model, "outcome": "completed"}) == 1.0


def test_enable_metrics_false_leaves_metrics_alone() -> None:
    """``LLMConfig(enable_metrics=False)`` adds no metrics callback."""
    model = "metrics-off-model"
    initialize_node_sync(LLMConfig(model_id=model, enable_metrics=False),
                         event_store=InMemoryEventStore(), steps=local_steps())
    assert prometheus_client.REGISTRY.get_sample_value(
        names.METRIC_INITIALIZATIONS, {"model": model, "outcome": "completed"}) is None


def test_backend_is_prometheus_client_without_ray_and_none_when_switched_off(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` picks prometheus_client when Ray isn't initialized; ``none`` turns metrics off."""
    assert isinstance(select_backend(), PrometheusBackend)
    monkeypatch.setenv(names.ENV_METRICS_BACKEND, "none")
    assert select_backend() is None


def test_asking_for_ray_without_ray_falls_back_with_one_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    """The ``ray`` backend outside Ray warns once and uses prometheus_client."""
    caplog.set_level(logging.WARNING, logger="llm_init")
    assert isinstance(select_backend("ray"), PrometheusBackend)
    assert isinstance(select_backend("ray"), PrometheusBackend)
    assert len(caplog.records) == 1


def test_standalone_endpoint_serves_the_metrics(registry: CollectorRegistry) -> None:
    """With a port, the registry is served over HTTP in Prometheus' text format."""
    backend = PrometheusBackend(registry, port=0, addr="127.0.0.1")
    initialize(MetricsCallback(backend))
    assert backend.server_port is not None
    url = f"http://127.0.0.1:{backend.server_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    assert f'{names.METRIC_PHASE_DURATION}_count{{model="{MODEL}",outcome="completed",' in text


def test_port_in_use_warns_once_and_the_initialization_succeeds(
        registry: CollectorRegistry, caplog: pytest.LogCaptureFixture) -> None:
    """A taken metrics port gives one warning; initializations and the registry carry on."""
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        caplog.set_level(logging.WARNING, logger="llm_init")
        initialize(MetricsCallback(PrometheusBackend(registry, port=port, addr="127.0.0.1")))
    (warning,) = caplog.records
    assert f"127.0.0.1:{port}" in warning.getMessage()
    assert value(registry, names.METRIC_INITIALIZATIONS, model=MODEL, outcome="completed") == 1


class BrokenBackend:
    """A backend whose instruments raise on use, like a full disk or a bug would."""

    name = "broken"
    key = ("broken",)

    def _instrument(self, *_: Any) -> Any:
        def fail(*_: Any) -> None:
            raise RuntimeError("metrics exploded")
        return SimpleNamespace(observe=fail, inc=fail, set=fail)

    histogram = counter = gauge = _instrument

    def start(self) -> None:
        pass


def test_failing_metrics_never_fail_the_initialization(
        caplog: pytest.LogCaptureFixture) -> None:
    """Instruments that raise cost one warning, not the initialization."""
    caplog.set_level(logging.WARNING, logger="llm_init")
    initialize(MetricsCallback(BrokenBackend()))  # type: ignore[arg-type]  # a broken backend on purpose
    assert [r.getMessage() for r in caplog.records] == [
        "llm-init metrics failed on PhaseStarted: RuntimeError('metrics exploded')"]
