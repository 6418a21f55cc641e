"""Tracing, metrics, logging and redaction: observers of the dispatch seam.

Importing this package is cheap and cycle-free (the core imports ``names`` and ``redaction``
from it): the public names below load their modules on first access, and optional packages
(prometheus-client, structlog, nvidia-ml-py, the OpenTelemetry SDK) load when first used.
``tracing`` is for the application layer: library code never imports the SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llm_init.telemetry.backends import PrometheusBackend, RayBackend, select_backend
    from llm_init.telemetry.gpu import GpuMemorySampler
    from llm_init.telemetry.logs import LogObserver, configure_logging
    from llm_init.telemetry.metrics import MetricsCallback
    from llm_init.telemetry.propagation import continued, env_vars, extract, inject
    from llm_init.telemetry.tracing import configure_tracing

_LAZY = {
    "PrometheusBackend": "backends", "RayBackend": "backends", "select_backend": "backends",
    "GpuMemorySampler": "gpu", "LogObserver": "logs", "configure_logging": "logs",
    "MetricsCallback": "metrics", "continued": "propagation", "env_vars": "propagation",
    "extract": "propagation", "inject": "propagation", "configure_tracing": "tracing",
}

__all__ = [
    "GpuMemorySampler",
    "LogObserver",
    "MetricsCallback",
    "PrometheusBackend",
    "RayBackend",
    "configure_logging",
    "configure_tracing",
    "continued",
    "env_vars",
    "extract",
    "inject",
    "select_backend",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
