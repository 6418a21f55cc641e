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

# Metric names, Prometheus conventions: base units as suffix, counters end in _total. Under Ray's
# metrics pipeline each is exported with Ray's ``ray_`` prefix.
METRIC_PHASE_DURATION = "llm_init_phase_duration_seconds"
METRIC_HOOK_DURATION = "llm_init_hook_duration_seconds"
METRIC_INITIALIZATIONS = "llm_init_initializations_total"
METRIC_IN_PROGRESS = "llm_init_in_progress"
METRIC_DOWNLOAD_BYTES = "llm_init_download_bytes_total"
METRIC_GPU_MEMORY_USED = "llm_init_gpu_memory_used_bytes"
METRIC_ENGINE_SUBPHASE_DURATION = "llm_init_engine_subphase_duration_seconds"
RAY_METRIC_PREFIX = "ray_"

# Metric label names: low cardinality only (never an init id).
LABEL_PHASE = "phase"
LABEL_MODEL = "model"
LABEL_OUTCOME = "outcome"
LABEL_HOOK = "hook"
LABEL_CALLBACK = "callback"
LABEL_GPU = "gpu"
LABEL_BOUNDARY = "boundary"
LABEL_SUBPHASE = "subphase"
