"""Where metrics go: Ray's metrics pipeline, or a ``prometheus_client`` registry served over HTTP.

Both take the same metric names, label names and buckets (``telemetry.names``); Ray exports each
with its ``ray_`` prefix and its own labels (``Component``, ``NodeAddress``, ``WorkerId``...).
``select_backend`` picks Ray when Ray is initialized in this process, else ``prometheus_client``;
``LLM_INIT_METRICS_BACKEND`` (``auto``, ``ray``, ``prometheus``, ``none``) overrides.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from llm_init.telemetry import health, names

_log = logging.getLogger(__name__)
Labels = tuple[str, ...]


class Histogram(Protocol):
    def observe(self, value: float, labels: Labels) -> None: ...


class Counter(Protocol):
    def inc(self, value: float, labels: Labels) -> None: ...


class Gauge(Protocol):
    def set(self, value: float, labels: Labels) -> None: ...


class MetricsBackend(Protocol):
    """Creates instruments. Each metric is created once per backend and process."""

    name: str

    @property
    def key(self) -> tuple[object, ...]:
        """Identifies where instruments live: backends with equal keys share instruments."""

    def histogram(self, name: str, doc: str, labels: Labels,
                  buckets: Sequence[float]) -> Histogram: ...

    def counter(self, name: str, doc: str, labels: Labels) -> Counter: ...

    def gauge(self, name: str, doc: str, labels: Labels) -> Gauge: ...

    def start(self) -> None:
        """Begin exporting (serve ``/metrics``); failures are reported, never raised."""


class _Children:
    """``prometheus_client`` children by label values, looked up once each."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[Labels, Any] = {}

    def child(self, labels: Labels) -> Any:
        found = self._children.get(labels)
        if found is None:
            found = self._children[labels] = self._metric.labels(*labels)
        return found


class _PromHistogram(_Children):
    def observe(self, value: float, labels: Labels) -> None:
        self.child(labels).observe(value)


class _PromCounter(_Children):
    def inc(self, value: float, labels: Labels) -> None:
        self.child(labels).inc(value)


class _PromGauge(_Children):
    def set(self, value: float, labels: Labels) -> None:
        self.child(labels).set(value)


_served: dict[tuple[object, str, int], int] = {}
_served_lock = threading.Lock()


class PrometheusBackend:
    """Metrics in a ``prometheus_client`` registry (default: the global one, so an existing
    ``/metrics`` endpoint of the process shows them too), served on ``addr:port``.

    ``port`` defaults to ``LLM_INIT_METRICS_PORT`` or 9464; ``None`` (or the variable set to
    ``off``) serves nothing, ``0`` an ephemeral port (see ``server_port``). A port in use gives one
    warning; the metrics are still kept and can be served another way.
    """

    name = "prometheus"

    def __init__(self, registry: Any | None = None, *, port: int | str | None = "env",
                 addr: str | None = None) -> None:
        import prometheus_client

        self.registry = registry if registry is not None else prometheus_client.REGISTRY
        self.port: int | None = _port_from_env() if isinstance(port, str) else port
        self.addr = addr or os.environ.get(names.ENV_METRICS_ADDR, names.DEFAULT_METRICS_ADDR)
        self.server_port: int | None = None

    @property
    def key(self) -> tuple[object, ...]:
        return (self.name, self.registry)  # the registry itself: an id could be reused

    def histogram(self, name: str, doc: str, labels: Labels,
                  buckets: Sequence[float]) -> Histogram:
        import prometheus_client

        return _PromHistogram(prometheus_client.Histogram(
            name, doc, labelnames=labels, buckets=tuple(buckets), registry=self.registry))

    def counter(self, name: str, doc: str, labels: Labels) -> Counter:
        import prometheus_client

        return _PromCounter(prometheus_client.Counter(name, doc, labelnames=labels,
                                                      registry=self.registry))

    def gauge(self, name: str, doc: str, labels: Labels) -> Gauge:
        import prometheus_client

        return _PromGauge(prometheus_client.Gauge(name, doc, labelnames=labels,
                                                  registry=self.registry,
                                                  multiprocess_mode="livesum"))

    def start(self) -> None:
        if self.port is None:
            return
        import prometheus_client

        key = (self.registry, self.addr, int(self.port))
        with _served_lock:
            if key in _served:  # served already (or failed to: then -1, and not retried)
                self.server_port = _served[key] if _served[key] >= 0 else None
                return
            try:
                server, _ = prometheus_client.start_http_server(self.port, self.addr,
                                                                registry=self.registry)
            except OSError as exc:
                health.failed("metrics", f"cannot serve llm-init metrics on "
                                         f"{self.addr}:{self.port} ({exc}); initializations go "
                                         f"on, and the metrics stay in the registry (set "
                                         f"{names.ENV_METRICS_PORT} to another port or 'off')")
                _served[key] = -1
                return
            self.server_port = _served[key] = int(server.server_address[1])
        _log.info("serving llm-init metrics on http://%s:%d/metrics", self.addr,
                  self.server_port)


def _port_from_env() -> int | None:
    raw = os.environ.get(names.ENV_METRICS_PORT, "").strip().lower()
    if not raw:
        return names.DEFAULT_METRICS_PORT
    if raw in ("off", "none", "no", "false", "-"):
        return None
    try:
        return int(raw)
    except ValueError:
        health.failed("metrics", f"{names.ENV_METRICS_PORT}={raw!r} is not a port; not serving")
        return None


class _RayMetric:
    def __init__(self, metric: Any, keys: Labels) -> None:
        self._metric = metric
        self._keys = keys
        self._tags: dict[Labels, dict[str, str]] = {}

    def tags(self, labels: Labels) -> dict[str, str]:
        found = self._tags.get(labels)
        if found is None:
            found = self._tags[labels] = dict(zip(self._keys, labels, strict=True))
        return found


class _RayHistogram(_RayMetric):
    def observe(self, value: float, labels: Labels) -> None:
        self._metric.observe(value, tags=self.tags(labels))


class _RayCounter(_RayMetric):
    def inc(self, value: float, labels: Labels) -> None:
        self._metric.inc(value, tags=self.tags(labels))


class _RayGauge(_RayMetric):
    def set(self, value: float, labels: Labels) -> None:
        self._metric.set(value, tags=self.tags(labels))


class RayBackend:
    """Metrics through ``ray.util.metrics``: the node's Ray metrics endpoint exports them (with
    the ``ray_`` prefix), where Ray clusters are already scraped. Ray must be initialized.
    Note that Ray approximates a histogram's ``_sum`` from bucket midpoints; counts are exact."""

    name = "ray"

    @property
    def key(self) -> tuple[object, ...]:
        return (self.name,)

    def histogram(self, name: str, doc: str, labels: Labels,
                  buckets: Sequence[float]) -> Histogram:
        from ray.util import metrics

        return _RayHistogram(metrics.Histogram(name, description=doc, boundaries=list(buckets),
                                               tag_keys=labels), labels)

    def counter(self, name: str, doc: str, labels: Labels) -> Counter:
        from ray.util import metrics

        return _RayCounter(metrics.Counter(name, description=doc, tag_keys=labels), labels)

    def gauge(self, name: str, doc: str, labels: Labels) -> Gauge:
        from ray.util import metrics

        return _RayGauge(metrics.Gauge(name, description=doc, tag_keys=labels), labels)

    def start(self) -> None:
        pass  # Ray's metrics agent exports; nothing to serve


def ray_is_initialized() -> bool:
    """Whether Ray runs in this process (checked without importing Ray)."""
    ray = sys.modules.get("ray")
    try:
        return bool(ray is not None and ray.is_initialized())
    except Exception:
        return False


def select_backend(spec: MetricsBackend | str | None = None) -> MetricsBackend | None:
    """The backend to use: ``spec`` itself, or by name (``auto``, ``ray``, ``prometheus``,
    ``none``; default ``LLM_INIT_METRICS_BACKEND`` or ``auto``). ``None`` means no metrics."""
    if spec is not None and not isinstance(spec, str):
        return spec
    choice = (spec or os.environ.get(names.ENV_METRICS_BACKEND) or "auto").strip().lower()
    if choice in ("none", "off"):
        return None
    if choice == "ray" or (choice == "auto" and ray_is_initialized()):
        if ray_is_initialized():
            return RayBackend()
        health.failed("metrics", "the ray metrics backend was asked for but Ray is not "
                                 "initialized in this process; using prometheus_client")
    elif choice not in ("auto", "prometheus"):
        health.failed("metrics", f"unknown metrics backend {choice!r} "
                                 f"(auto, ray, prometheus, none); using prometheus_client")
    try:
        return PrometheusBackend()
    except ImportError:
        health.failed("metrics", "llm-init metrics are off: prometheus-client is not installed "
                                 "(pip install 'llm-init[telemetry]')")
        return None
