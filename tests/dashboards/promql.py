"""The PromQL of the committed dashboard and alert rules, as the tests read it: every panel query
with Grafana's variables substituted, every rule, and the metric and label names they use."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llm_init.telemetry import names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "llm-init-initialization.json"
RULES = ROOT / "telemetry" / "alerts.yml"

HISTOGRAMS = (names.METRIC_PHASE_DURATION, names.METRIC_HOOK_DURATION,
              names.METRIC_ENGINE_SUBPHASE_DURATION, names.METRIC_REPLICA_STARTUP,
              names.METRIC_ARTIFACT_SECONDS, names.METRIC_WARM_START_SUBPHASE,
              names.METRIC_WEIGHT_SECONDS, names.METRIC_WEIGHT_THROUGHPUT)
SERIES = (names.METRIC_INITIALIZATIONS, names.METRIC_IN_PROGRESS, names.METRIC_DOWNLOAD_BYTES,
          names.METRIC_GPU_MEMORY_USED, names.METRIC_ARTIFACT_CACHE,
          names.METRIC_ARTIFACT_BYTES, names.METRIC_WEIGHT_BYTES)
# Every sample name the exporter can produce, from the constants.
EXPORTED = frozenset(SERIES) | {f"{h}{s}" for h in HISTOGRAMS
                                for s in ("_bucket", "_sum", "_count")}
LABELS = frozenset(v for k, v in vars(names).items() if k.startswith("LABEL_")) | {"le"}

_METRIC = re.compile(r"(?<![a-z0-9_:])(\(ray_\)\?|ray_)?(llm_init_[a-z_]+)")
_RECORDED = re.compile(r"\bllm_init:[a-z0-9_:]+")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref_id: str
    expr: str
    instant: bool


def dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def panels(path: Path = DASHBOARD) -> list[dict[str, Any]]:
    """The dashboard's panels, rows left out."""
    return [p for p in dashboard(path)["panels"] if p["type"] != "row"]


def panel_queries(path: Path = DASHBOARD) -> list[PanelQuery]:
    return [PanelQuery(p["title"], t["refId"], t["expr"], bool(t.get("instant")))
            for p in panels(path) for t in p.get("targets", [])]


def substitute(expr: str, *, model: str, application: str = ".*", interval: str = "1m",
               range_: str = "5m") -> str:
    """``expr`` as Grafana would send it with one model selected and every application."""
    for var, value in (("__rate_interval", interval), ("__interval", interval),
                       ("__range", range_), ("model", model), ("application", application)):
        expr = expr.replace(f"${{{var}}}", value).replace(f"${var}", value)
    assert "$" not in expr, f"unsubstituted variable in {expr}"
    return expr


def rules(path: Path = RULES) -> list[dict[str, Any]]:
    """Every rule of every group: ``{"record"|"alert": name, "expr": ..., ...}``."""
    return [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]


def metric_names(expr: str) -> set[str]:
    """The llm-init metric names an expression selects (without Ray's prefix)."""
    return {m.group(2) for m in _METRIC.finditer(expr)}


def bare_metric_names(expr: str) -> set[str]:
    """Names selected without the ``(ray_)?`` prefix: they would miss Ray's endpoint."""
    return {m.group(2) for m in _METRIC.finditer(expr) if m.group(1) != "(ray_)?"}


def recorded_names(expr: str) -> set[str]:
    return set(_RECORDED.findall(expr))


def grouping_labels(expr: str) -> set[str]:
    """Label names in ``by``/``without``/``on``/``ignoring`` clauses."""
    return {label.strip() for group in _GROUPING.findall(expr)
            for label in group.split(",") if label.strip()}
