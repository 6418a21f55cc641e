"""``MetricsCallback``: the built-in callback that turns the event stream into Prometheus metrics.

It is an event observer (``on_event``): every number comes from the events the dispatch seam
records, except GPU memory, which it samples through NVML when a phase starts and ends. The
runtime adds one to every initialization unless ``LLMConfig.enable_metrics`` is false.

Metrics (names in ``telemetry.names``; under Ray each gets Ray's ``ray_`` prefix):

- ``llm_init_phase_duration_seconds{phase,model,outcome}`` histogram, 0.1 s to 1 h;
- ``llm_init_hook_duration_seconds{hook,callback,outcome}`` histogram;
- ``llm_init_initializations_total{model,outcome}`` counter; ``outcome="abandoned"`` counts the
  initializations of dead processes that a later process on their host closed at its start-up;
- ``llm_init_in_progress{model,phase}`` gauge: initializations of this process in that phase;
- ``llm_init_download_bytes_total{model}``: the ``bytes_delta`` of the download step's
  ``StepProgressed`` events (``names.DETAIL_BYTES_DELTA``);
- ``llm_init_engine_subphase_duration_seconds{model,subphase}``: the ``subphase``/``duration_s`` of
  the engine step's ``StepProgressed`` events (``names.DETAIL_SUBPHASE``, ``DETAIL_DURATION_S``);
- ``llm_init_gpu_memory_used_bytes{model,phase,boundary,gpu}``: NVML, at each phase's start and
  end, for each visible GPU; absent without a GPU.
- ``llm_init_artifact_cache_total{model,result}``: warm-start restores per node, ``hit``,
  ``miss`` (nothing to restore) or ``error`` (a corrupt or untrusted artifact, an unreachable
  store); and
  ``unused``, once more for a ``hit`` whose artifact vLLM did not use (it compiled anyway,
  ``ArtifactUseObserved``): the effective hit ratio is ``(hit - unused) / (hit + miss +
  error)``;
- ``llm_init_artifact_bytes_total{model,direction}`` and ``llm_init_artifact_seconds{model,
  direction}``: warm-start artifacts restored and published (``restore``/``publish``);
- ``llm_init_warm_start_subphase_seconds{model,subphase,result}``: with a warm start, each engine
  sub-phase and the whole ``engine_init`` phase, by the restore's ``hit``/``miss``/``error``;
- ``llm_init_weight_bytes_total{model,phase,node}``, ``llm_init_weight_seconds{model,phase,
  node}`` and ``llm_init_weight_throughput_bytes_per_second{model,phase,node}``: the weights
  moved, ``phase="download"`` once per node whose download fetched bytes (its ``node_completed``
  progress) and ``phase="engine"`` once per engine worker (``WeightsLoaded``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from llm_init.events import (
    ArtifactMissed,
    ArtifactPublished,
    ArtifactRestored,
    ArtifactUseObserved,
    Event,
    HookCompleted,
    HookFailed,
    InitializationAbandoned,
    InitializationCompleted,
    InitializationFailed,
    InitializationStarted,
    PhaseCompleted,
    PhaseFailed,
    PhaseStarted,
    ReplicaLaunched,
    ReplicaReady,
    StepProgressed,
    WeightsLoaded,
)
from llm_init.telemetry import health, names
from llm_init.telemetry.backends import (
    Counter,
    Gauge,
    Histogram,
    MetricsBackend,
    select_backend,
)
from llm_init.telemetry.gpu import GpuMemorySampler, default_sampler
from llm_init.telemetry.redaction import redact_identifier
from llm_init.weight_transfers import download_done

_log = logging.getLogger(__name__)
_SUBPHASES = frozenset(names.ENGINE_SUBPHASES)
_ENGINE_INIT = "engine_init"  # the phase (llm_init.phases.Phase.ENGINE_INIT)


class Instruments:
    """The metrics of one backend in this process, shared by every ``MetricsCallback`` on it,
    with the process-wide count of initializations in each phase behind the in-progress gauge."""

    def __init__(self, backend: MetricsBackend) -> None:
        n = names
        self.backend = backend
        self.phase_duration: Histogram = backend.histogram(
            n.METRIC_PHASE_DURATION, "Duration of each initialization phase.",
            (n.LABEL_PHASE, n.LABEL_MODEL, n.LABEL_OUTCOME), n.PHASE_DURATION_BUCKETS)
        self.hook_duration: Histogram = backend.histogram(
            n.METRIC_HOOK_DURATION, "Duration of each callback hook invocation.",
            (n.LABEL_HOOK, n.LABEL_CALLBACK, n.LABEL_OUTCOME), n.HOOK_DURATION_BUCKETS)
        self.initializations: Counter = backend.counter(
            n.METRIC_INITIALIZATIONS, "Finished initializations, by outcome.",
            (n.LABEL_MODEL, n.LABEL_OUTCOME))
        self.in_progress: Gauge = backend.gauge(
            n.METRIC_IN_PROGRESS, "Initializations of this process now in each phase.",
            (n.LABEL_MODEL, n.LABEL_PHASE))
        self.download_bytes: Counter = backend.counter(
            n.METRIC_DOWNLOAD_BYTES, "Bytes fetched by the download step.", (n.LABEL_MODEL,))
        self.engine_subphase: Histogram = backend.histogram(
            n.METRIC_ENGINE_SUBPHASE_DURATION,
            "Duration of the engine's GPU start-up sub-phases, as the engine step reports them.",
            (n.LABEL_MODEL, n.LABEL_SUBPHASE), n.ENGINE_SUBPHASE_BUCKETS)
        self.replica_startup: Histogram = backend.histogram(
            n.METRIC_REPLICA_STARTUP,
            "A Serve replica's start-up outside the initialization: waiting to be scheduled, "
            "booting (process start, imports, constructor), waiting for the first health check.",
            (n.LABEL_MODEL, n.LABEL_SEGMENT), n.PHASE_DURATION_BUCKETS)
        self.gpu_memory: Gauge = backend.gauge(
            n.METRIC_GPU_MEMORY_USED, "GPU memory used at the start and end of each phase.",
            (n.LABEL_MODEL, n.LABEL_PHASE, n.LABEL_BOUNDARY, n.LABEL_GPU))
        self.artifact_cache: Counter = backend.counter(
            n.METRIC_ARTIFACT_CACHE, "Warm-start artifact restores per node, by result.",
            (n.LABEL_MODEL, n.LABEL_RESULT))
        self.artifact_bytes: Counter = backend.counter(
            n.METRIC_ARTIFACT_BYTES, "Bytes of warm-start artifacts restored or published.",
            (n.LABEL_MODEL, n.LABEL_DIRECTION))
        self.artifact_seconds: Histogram = backend.histogram(
            n.METRIC_ARTIFACT_SECONDS, "Time to restore or publish a warm-start artifact.",
            (n.LABEL_MODEL, n.LABEL_DIRECTION), n.PHASE_DURATION_BUCKETS)
        self.warm_start_subphase: Histogram = backend.histogram(
            n.METRIC_WARM_START_SUBPHASE,
            "Engine sub-phases and the engine_init phase of starts with a warm start, by the "
            "restore's result.", (n.LABEL_MODEL, n.LABEL_SUBPHASE, n.LABEL_RESULT),
            n.ENGINE_SUBPHASE_BUCKETS)
        self.weight_bytes: Counter = backend.counter(
            n.METRIC_WEIGHT_BYTES, "Bytes of model weights moved, by the download step "
            "(phase=download) or by the engine's own load (phase=engine).",
            (n.LABEL_MODEL, n.LABEL_PHASE, n.LABEL_NODE))
        self.weight_seconds: Histogram = backend.histogram(
            n.METRIC_WEIGHT_SECONDS, "Time to move the model's weights, per node (download) or "
            "engine worker (engine).", (n.LABEL_MODEL, n.LABEL_PHASE, n.LABEL_NODE),
            n.ENGINE_SUBPHASE_BUCKETS)
        self.weight_throughput: Histogram = backend.histogram(
            n.METRIC_WEIGHT_THROUGHPUT, "Bytes per second at which the model's weights moved, "
            "per node (download) or engine worker (engine).",
            (n.LABEL_MODEL, n.LABEL_PHASE, n.LABEL_NODE), n.WEIGHT_THROUGHPUT_BUCKETS)
        self._counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def enter(self, model: str, phase: str, delta: int) -> None:
        with self._lock:
            count = self._counts[(model, phase)] = self._counts.get((model, phase), 0) + delta
            self.in_progress.set(count, (model, phase))


_instruments: dict[tuple[object, ...], Instruments] = {}
_instruments_lock = threading.Lock()


def instruments_for(backend: MetricsBackend) -> Instruments:
    """The instruments of ``backend``, created (and the backend started) once per process."""
    with _instruments_lock:
        found = _instruments.get(backend.key)
        if found is None:
            found = _instruments[backend.key] = Instruments(backend)
            backend.start()
        return found


class MetricsCallback:
    """Built-in callback (an event observer) keeping llm-init's metrics; see the module docs.

    ``backend``: a ``MetricsBackend``, a backend name, or ``None`` for the automatic choice
    (Ray's pipeline when Ray is initialized, else ``prometheus_client``). ``gpu``: the NVML
    sampler (default: the process's). One instance follows one initialization at a time.
    """

    def __init__(self, backend: MetricsBackend | str | None = None, *,
                 gpu: GpuMemorySampler | None = None) -> None:
        self._backend = backend
        self._gpu = gpu
        self._metrics: Instruments | None = None
        self._off = False
        self._model = "unknown"
        self._phase: str | None = None
        self._warm: str | None = None  # this initialization's restore result, if any
        self._fetched: dict[str, int] = {}  # per node: bytes its download fetched so far
        self._handlers: dict[type[Event], Callable[[Instruments, Any], None]] = {
            InitializationStarted: self._started, InitializationCompleted: self._finished,
            InitializationFailed: self._finished, PhaseStarted: self._phase_started,
            PhaseCompleted: self._phase_ended, PhaseFailed: self._phase_ended,
            HookCompleted: self._hook_ended, HookFailed: self._hook_ended,
            StepProgressed: self._progressed, ReplicaLaunched: self._launched,
            ReplicaReady: self._ready, InitializationAbandoned: self._abandoned,
            ArtifactRestored: self._restored, ArtifactMissed: self._missed,
            ArtifactPublished: self._published, ArtifactUseObserved: self._use_observed,
            WeightsLoaded: self._weights_loaded,
        }

    @property
    def instruments(self) -> Instruments | None:
        """The instruments in use, once the first event has set them up."""
        return self._metrics

    def on_event(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is None or self._off:
            return
        if self._metrics is None:
            self._set_up()
            if self._metrics is None:
                return
        try:
            handler(self._metrics, event)
        except Exception as exc:
            health.failed("metrics", f"llm-init metrics failed on {event.TYPE}: {exc!r}")

    def _set_up(self) -> None:
        try:
            backend = select_backend(self._backend)
            self._metrics = instruments_for(backend) if backend is not None else None
        except Exception as exc:
            health.failed("metrics", f"llm-init metrics are off: cannot set them up ({exc!r})")
            self._metrics = None
        self._off = self._metrics is None
        if self._gpu is None:
            self._gpu = default_sampler()

    def _started(self, m: Instruments, e: InitializationStarted) -> None:
        self._model = redact_identifier(e.model_id)
        self._warm = None
        self._fetched = {}

    def _finished(self, m: Instruments, e: InitializationCompleted | InitializationFailed) -> None:
        if self._phase is not None:  # the phase never recorded its end (a crash in between)
            m.enter(self._model, self._phase, -1)
            self._phase = None
        outcome = (names.OUTCOME_COMPLETED if isinstance(e, InitializationCompleted)
                   else names.OUTCOME_FAILED)
        m.initializations.inc(1, (self._model, outcome))

    def _abandoned(self, m: Instruments, e: InitializationAbandoned) -> None:
        # Another (dead) process's initialization: its own model, not this one's.
        m.initializations.inc(1, (redact_identifier(e.model_id or "unknown"),
                                  names.OUTCOME_ABANDONED))

    def _launched(self, m: Instruments, e: ReplicaLaunched) -> None:
        for segment, seconds in ((names.SEGMENT_SCHEDULING, e.scheduling_s),
                                 (names.SEGMENT_BOOT, e.boot_s)):
            if seconds is not None:
                m.replica_startup.observe(seconds, (self._model, segment))

    def _ready(self, m: Instruments, e: ReplicaReady) -> None:
        m.replica_startup.observe(e.since_initialization_s, (self._model, names.SEGMENT_READY))

    def _restored(self, m: Instruments, e: ArtifactRestored) -> None:
        self._warm = self._warm or names.RESULT_HIT
        m.artifact_cache.inc(1, (self._model, names.RESULT_HIT))
        m.artifact_bytes.inc(e.bytes, (self._model, names.DIRECTION_RESTORE))
        m.artifact_seconds.observe(e.seconds, (self._model, names.DIRECTION_RESTORE))

    def _missed(self, m: Instruments, e: ArtifactMissed) -> None:
        result = (names.RESULT_ERROR if e.reason in names.ARTIFACT_ERROR_REASONS
                  else names.RESULT_MISS)
        m.artifact_cache.inc(1, (self._model, result))
        self._warm = self._warm or result

    def _use_observed(self, m: Instruments, e: ArtifactUseObserved) -> None:
        if e.restored and not e.used:
            m.artifact_cache.inc(1, (self._model, names.RESULT_UNUSED))

    def _published(self, m: Instruments, e: ArtifactPublished) -> None:
        m.artifact_bytes.inc(e.bytes, (self._model, names.DIRECTION_PUBLISH))
        m.artifact_seconds.observe(e.seconds, (self._model, names.DIRECTION_PUBLISH))

    def _phase_started(self, m: Instruments, e: PhaseStarted) -> None:
        self._phase = e.phase
        m.enter(self._model, e.phase, +1)
        self._sample_gpus(m, e.phase, names.BOUNDARY_START)

    def _phase_ended(self, m: Instruments, e: PhaseCompleted | PhaseFailed) -> None:
        outcome = (names.OUTCOME_COMPLETED if isinstance(e, PhaseCompleted)
                   else names.OUTCOME_FAILED)
        m.phase_duration.observe(e.duration_s, (e.phase, self._model, outcome))
        if (self._warm is not None and e.phase == _ENGINE_INIT
                and isinstance(e, PhaseCompleted)):
            m.warm_start_subphase.observe(e.duration_s, (self._model, e.phase, self._warm))
        if self._phase == e.phase:
            m.enter(self._model, e.phase, -1)
            self._phase = None
        self._sample_gpus(m, e.phase, names.BOUNDARY_END)

    def _hook_ended(self, m: Instruments, e: HookCompleted | HookFailed) -> None:
        outcome = names.OUTCOME_FAILED if isinstance(e, HookFailed) else names.OUTCOME_COMPLETED
        m.hook_duration.observe(e.duration_s, (e.hook, e.callback, outcome))

    def _progressed(self, m: Instruments, e: StepProgressed) -> None:
        details = e.details
        if e.step == names.STEP_DOWNLOAD:
            delta = details.get(names.DETAIL_BYTES_DELTA)
            if isinstance(delta, int | float) and not isinstance(delta, bool) and delta > 0:
                m.download_bytes.inc(delta, (self._model,))
            done = download_done(e, self._fetched)
            if done is not None and done.bytes > 0:  # a node with all files cached moved none
                self._weights(m, names.WEIGHT_PHASE_DOWNLOAD, done.node, done.bytes,
                              done.seconds, done.bytes_per_s)
        elif e.step == names.STEP_ENGINE:
            subphase = details.get(names.DETAIL_SUBPHASE)
            duration = details.get(names.DETAIL_DURATION_S)
            if subphase in _SUBPHASES and isinstance(duration, int | float) and duration >= 0:
                m.engine_subphase.observe(duration, (self._model, str(subphase)))
                if self._warm is not None:
                    m.warm_start_subphase.observe(duration,
                                                  (self._model, str(subphase), self._warm))
            elif subphase is not None:
                _log.debug("ignored engine sub-phase %r (known: %s)", subphase,
                           ", ".join(names.ENGINE_SUBPHASES))

    def _weights_loaded(self, m: Instruments, e: WeightsLoaded) -> None:
        self._weights(m, names.WEIGHT_PHASE_ENGINE, e.node, e.bytes, e.seconds, e.bytes_per_s)

    def _weights(self, m: Instruments, phase: str, node: str | None, size: int,
                 seconds: float | None, rate: float | None) -> None:
        labels = (self._model, phase, node or "unknown")
        if size > 0:
            m.weight_bytes.inc(size, labels)
        if seconds is not None and seconds >= 0:
            m.weight_seconds.observe(seconds, labels)
        if rate:
            m.weight_throughput.observe(rate, labels)

    def _sample_gpus(self, m: Instruments, phase: str, boundary: str) -> None:
        if self._gpu is None:
            return
        for gpu, used in self._gpu.sample():
            m.gpu_memory.set(used, (self._model, phase, boundary, gpu))
