"""Every telemetry name in one place: span names, attribute keys, metric names.

Dashboards, alert rules and tests are checked against these constants.
"""

from __future__ import annotations

INSTRUMENTATION_NAME = "llm_init"

# Span names. Low-cardinality by design: the hook, phase or step is part of the name, ids never.
SPAN_INITIALIZE = "llm_init.initialize"
SPAN_PHASE_PREFIX = "llm_init.phase."
SPAN_HOOK_PREFIX = "llm_init.hook."
SPAN_STEP_PREFIX = "llm_init.step."
SPAN_EVENT_CONTEXT_CHANGED = "llm_init.context.changed"

# Attribute keys. OpenTelemetry has no conventions for model start-up, so only the model uses a
# standard key; the rest live under the project's namespace.
ATTR_MODEL = "gen_ai.request.model"
ATTR_INIT_ID = "llm_init.init_id"
ATTR_PHASE = "llm_init.phase"
ATTR_HOOK = "llm_init.hook"
ATTR_STEP = "llm_init.step"
ATTR_CALLBACK = "llm_init.callback"
ATTR_RAY_HOOK = "llm_init.ray_hook"  # a Ray Serve LLM callback's own hook name
ATTR_RETURNED = "llm_init.hook.returned"
ATTR_SKIPPED_DEFAULT = "llm_init.hook.skipped_default"
ATTR_CHANGED_FIELDS = "llm_init.context.changed_fields"
ATTR_FIELD = "llm_init.context.field"
ATTR_KEY = "llm_init.context.key"
ATTR_OLD = "llm_init.context.old"
ATTR_NEW = "llm_init.context.new"
ATTR_TIMED_OUT = "llm_init.hook.timed_out"
ATTR_OUTCOME = "llm_init.outcome"
ATTR_NODE_ID = "llm_init.node_id"
ATTR_ERROR_TYPE = "error.type"

# Span status and outcome values.
OUTCOME_COMPLETED = "completed"
OUTCOME_FAILED = "failed"
# An initialization whose process died: closed by a later process on its host (counted in
# ``llm_init_initializations_total``), or judged so by readers from its silent heartbeat.
OUTCOME_ABANDONED = "abandoned"

# Metric names, Prometheus conventions: base units as suffix, counters end in _total. Under Ray's
# metrics pipeline each is exported with Ray's ``ray_`` prefix.
METRIC_PHASE_DURATION = "llm_init_phase_duration_seconds"
METRIC_HOOK_DURATION = "llm_init_hook_duration_seconds"
METRIC_INITIALIZATIONS = "llm_init_initializations_total"
METRIC_IN_PROGRESS = "llm_init_in_progress"
METRIC_DOWNLOAD_BYTES = "llm_init_download_bytes_total"
METRIC_GPU_MEMORY_USED = "llm_init_gpu_memory_used_bytes"
METRIC_ENGINE_SUBPHASE_DURATION = "llm_init_engine_subphase_duration_seconds"
METRIC_REPLICA_STARTUP = "llm_init_replica_startup_seconds"
RAY_METRIC_PREFIX = "ray_"
METRIC_ARTIFACT_CACHE = "llm_init_artifact_cache_total"
METRIC_ARTIFACT_BYTES = "llm_init_artifact_bytes_total"
METRIC_ARTIFACT_SECONDS = "llm_init_artifact_seconds"
# Engine sub-phases (and the whole engine_init phase) of starts with a warm start, by its result:
# what a hit saves against a miss.
METRIC_WARM_START_SUBPHASE = "llm_init_warm_start_subphase_seconds"

# Metric label names: low cardinality only (never an init id).
LABEL_PHASE = "phase"
LABEL_MODEL = "model"
LABEL_OUTCOME = "outcome"
LABEL_HOOK = "hook"
LABEL_CALLBACK = "callback"
LABEL_GPU = "gpu"
LABEL_BOUNDARY = "boundary"
LABEL_SUBPHASE = "subphase"
LABEL_SEGMENT = "segment"
LABEL_RESULT = "result"
LABEL_DIRECTION = "direction"

# Values of the warm-start metrics' labels: a restore's result, and the transfer's direction.
RESULT_HIT = "hit"
RESULT_MISS = "miss"
RESULT_ERROR = "error"
# A restored artifact that vLLM did not use (it compiled anyway): counted besides its ``hit``,
# so the effective hit ratio is (hit - unused) / (hit + miss + error).
RESULT_UNUSED = "unused"
DIRECTION_RESTORE = "restore"
DIRECTION_PUBLISH = "publish"
# Miss reasons that mean the store or the artifact is broken, not merely absent.
ARTIFACT_ERROR_REASONS = ("corrupt", "unreachable", "timeout", "local_error", "denied",
                          "untrusted")
SPAN_ARTIFACT_RESTORE = "llm_init.artifact.restore"
SPAN_ARTIFACT_PUBLISH = "llm_init.artifact.publish"
ATTR_ARTIFACT_KEY = "llm_init.artifact.key"
ATTR_ARTIFACT_RESULT = "llm_init.artifact.result"
ATTR_ARTIFACT_REASON = "llm_init.artifact.reason"
ATTR_ARTIFACT_BYTES = "llm_init.artifact.bytes"
# On the engine step's span: whether vLLM used its compile cache, and how (aot loaded/failed).
ATTR_ARTIFACT_USED = "llm_init.artifact.used"
ATTR_ARTIFACT_AOT = "llm_init.artifact.aot"
ATTR_ARTIFACT_GRAPHS_LOADED = "llm_init.artifact.graphs_loaded"
ATTR_ARTIFACT_GRAPHS_COMPILED = "llm_init.artifact.graphs_compiled"

# The weights' transfer: one span per engine worker (a child of the engine step's span, drawn
# where its log said), and the metrics of both phases that move weights.
SPAN_WEIGHT_LOADING = "llm_init.engine.weight_loading"
ATTR_WEIGHT_BYTES = "llm_init.weights.bytes"
ATTR_WEIGHT_FILES = "llm_init.weights.files"
ATTR_WEIGHT_SECONDS = "llm_init.weights.seconds"
ATTR_WEIGHT_BYTES_PER_S = "llm_init.weights.bytes_per_second"
ATTR_WEIGHT_LOAD_FORMAT = "llm_init.weights.load_format"
ATTR_WEIGHT_WORKER = "llm_init.weights.worker"
METRIC_WEIGHT_BYTES = "llm_init_weight_bytes_total"
METRIC_WEIGHT_SECONDS = "llm_init_weight_seconds"
METRIC_WEIGHT_THROUGHPUT = "llm_init_weight_throughput_bytes_per_second"
LABEL_NODE = "node"
# Values of the weight metrics' ``phase`` label: the download step (bytes fetched per node)
# and the engine's own load (``WeightsLoaded``, per worker).
WEIGHT_PHASE_DOWNLOAD = "download"
WEIGHT_PHASE_ENGINE = "engine"

# Values of the ``segment`` label of the replica start-up histogram: the parts of a Serve
# replica's start-up that are not the initialization's phases.
SEGMENT_SCHEDULING = "scheduling"
SEGMENT_BOOT = "boot"
SEGMENT_READY = "ready"

# Values of the ``boundary`` label of the GPU memory gauge: sampled when a phase starts and ends.
BOUNDARY_START = "start"
BOUNDARY_END = "end"

# Histogram buckets, in seconds. Phases run from a cached no-op (0.1 s) to a large download (1 h);
# hooks are usually milliseconds but may do real work (a download of their own).
PHASE_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                          1200.0, 1800.0, 3600.0)
HOOK_DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                         5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
# Bytes per second, 1 MB/s to 100 GB/s: a slow store to a fast local NVMe.
WEIGHT_THROUGHPUT_BUCKETS = (1e6, 1e7, 2.5e7, 5e7, 1e8, 2.5e8, 5e8, 1e9, 2e9, 4e9, 8e9, 1.6e10,
                             3.2e10, 1e11)
ENGINE_SUBPHASE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
                           600.0, 1200.0, 3600.0)

# Keys of ``StepProgressed.details`` that the metrics callback reads. A step reports progress
# with ``report(**details)``; these keys are the contract between the steps and the metrics.
STEP_DOWNLOAD = "download"
STEP_ENGINE = "engine"
# Download step: bytes fetched since its previous report (an increment, never a running total).
DETAIL_BYTES_DELTA = "bytes_delta"
# Engine step: one finished GPU sub-phase of the engine start, and how long it took.
DETAIL_SUBPHASE = "subphase"
DETAIL_DURATION_S = "duration_s"
# The engine sub-phases, as values of ``DETAIL_SUBPHASE`` and of the ``subphase`` label. Others
# are ignored, which keeps the label's cardinality bounded.
SUBPHASE_WEIGHT_LOADING = "weight_loading"
SUBPHASE_KV_CACHE_PROFILING = "kv_cache_profiling"
SUBPHASE_KV_CACHE_ALLOCATION = "kv_cache_allocation"
SUBPHASE_TORCH_COMPILE = "torch_compile"
SUBPHASE_CUDA_GRAPH_CAPTURE = "cuda_graph_capture"
# vLLM logs nothing between allocating the KV cache and warming up, so the engine step can only
# time the two together.
SUBPHASE_KV_CACHE_ALLOCATION_AND_WARMUP = "kv_cache_allocation_and_warmup"
ENGINE_SUBPHASES = (SUBPHASE_WEIGHT_LOADING, SUBPHASE_KV_CACHE_PROFILING,
                    SUBPHASE_KV_CACHE_ALLOCATION, SUBPHASE_KV_CACHE_ALLOCATION_AND_WARMUP,
                    SUBPHASE_TORCH_COMPILE, SUBPHASE_CUDA_GRAPH_CAPTURE)

# Keys of structured log lines (besides structlog's own ``event``, ``level``, ``timestamp``).
LOG_INIT_ID = "init_id"
LOG_PHASE = "phase"
LOG_HOOK = "hook"
LOG_CALLBACK = "callback"
LOG_STEP = "step"
LOG_TRACE_ID = "trace_id"
LOG_SPAN_ID = "span_id"
LOGGER_EVENTS = "llm_init.events"
LOGGER_TELEMETRY = "llm_init.telemetry"

# Environment variables read by llm-init's telemetry (the OpenTelemetry SDK reads its own
# ``OTEL_*`` variables).
ENV_TRACEPARENT = "TRACEPARENT"
ENV_TRACESTATE = "TRACESTATE"
ENV_METRICS_BACKEND = "LLM_INIT_METRICS_BACKEND"  # auto | ray | prometheus | none
ENV_METRICS_PORT = "LLM_INIT_METRICS_PORT"  # standalone /metrics port; "off" serves nothing
ENV_METRICS_ADDR = "LLM_INIT_METRICS_ADDR"
ENV_TRACE_FLUSH_TIMEOUT = "LLM_INIT_TRACE_FLUSH_TIMEOUT_S"
ENV_EVENT_FLUSH_INTERVAL = "LLM_INIT_EVENT_FLUSH_INTERVAL_S"
ENV_HEARTBEAT_INTERVAL = "LLM_INIT_HEARTBEAT_INTERVAL_S"  # 0 turns heartbeats off
ENV_LOG_FORMAT = "LLM_INIT_LOG_FORMAT"  # auto | json | console
ENV_LOG_LEVEL = "LLM_INIT_LOG_LEVEL"
ENV_TRACE_URL = "LLM_INIT_TRACE_URL"  # e.g. http://jaeger:16686/trace/{trace_id}
DEFAULT_METRICS_PORT = 9464
DEFAULT_METRICS_ADDR = "0.0.0.0"
DEFAULT_TRACE_FLUSH_TIMEOUT_S = 2.0
DEFAULT_EVENT_FLUSH_INTERVAL_S = 0.05
DEFAULT_HEARTBEAT_INTERVAL_S = 5.0
