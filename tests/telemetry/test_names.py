"""Telemetry names follow the conventions, and the user docs and instruments match them."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from llm_init import InMemoryEventStore, LLMConfig, initialize_node_sync
from llm_init.telemetry import names
from llm_init.telemetry.backends import PrometheusBackend
from llm_init.telemetry.metrics import MetricsCallback
from tests.support.steps import local_steps

DOCS = Path(__file__).resolve().parents[2] / "docs" / "telemetry.md"


def constants(prefix: str) -> dict[str, str]:
    return {k: v for k, v in vars(names).items() if k.startswith(prefix) and isinstance(v, str)}


METRICS = constants("METRIC_")


def test_metric_names_follow_prometheus_conventions() -> None:
    """Metric names are snake case under ``llm_init_``, with base units (a rate's as
    OpenTelemetry's Prometheus exporter spells ``By/s``) and ``_total``."""
    for constant, name in METRICS.items():
        assert re.fullmatch(r"llm_init_[a-z0-9_]+", name), constant
        assert name.endswith(("_seconds", "_bytes", "_bytes_per_second", "_total",
                              "_in_progress")), constant
    assert len(set(METRICS.values())) == len(METRICS)


def test_span_names_and_attribute_keys_live_in_namespaces() -> None:
    """Spans and attributes are under ``llm_init.``, except the standard model and error keys."""
    for name in constants("SPAN_").values():
        assert name.startswith("llm_init."), name
    assert (names.ATTR_MODEL, names.ATTR_ERROR_TYPE) == ("gen_ai.request.model", "error.type")
    standard = {names.ATTR_MODEL, names.ATTR_ERROR_TYPE}
    for name in constants("ATTR_").values():
        assert name in standard or name.startswith("llm_init."), name


def test_metrics_callback_exports_every_metric_name() -> None:
    """Each ``METRIC_*`` constant is a metric family of the callback's registry."""
    registry = CollectorRegistry()
    initialize_node_sync(LLMConfig(model_id="m"), event_store=InMemoryEventStore(),
                         steps=local_steps(),
                         observers=[MetricsCallback(PrometheusBackend(registry, port=None))])
    text = generate_latest(registry).decode()
    helped = set(re.findall(r"^# HELP (\S+) ", text, flags=re.MULTILINE))
    assert set(METRICS.values()) <= helped


def test_user_docs_name_every_metric_key_and_variable() -> None:
    """docs/telemetry.md documents every metric, progress detail key and environment variable."""
    text = DOCS.read_text()
    documented = {**METRICS, **constants("DETAIL_"), **constants("ENV_"),
                  **constants("SUBPHASE_")}
    missing = {k: v for k, v in documented.items() if f"`{v}`" not in text}
    assert missing == {}
