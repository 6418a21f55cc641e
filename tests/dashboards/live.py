"""Checks shared by the live tests: every panel query and rule of the committed dashboard and
rules, run against a real Prometheus that scraped real initializations."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from dashboards.generate import GPU_ONLY_PANELS
from llm_init.telemetry import names
from llm_init.telemetry.gpu import GpuMemorySampler
from tests.dashboards import promql
from tests.dashboards.replica import MODEL
from tests.support.prometheus import Prometheus, Result

# What the fleet of stand-in replicas did: two completed, two failed in the engine step, one
# stuck in the placement group phase.
COMPLETED, FAILED, STUCK = 2, 2, 1


def shows_data(result: Result) -> bool:
    """At least one finite value above zero: a panel of zeros or NaN shows nothing."""
    return any(math.isfinite(v) and v > 0 for v in (float(r["value"][1]) for r in result))


def run_panel_queries(prom: Prometheus) -> dict[tuple[str, str], Result]:
    """Every query of every panel, variables substituted, by (panel title, ref id)."""
    return {(q.panel, q.ref_id): prom.query(promql.substitute(q.expr, model=MODEL))
            for q in promql.panel_queries()}


def assert_every_panel_shows_data(results: dict[tuple[str, str], Result]) -> None:
    """Each query of each panel returns at least one finite value above zero, except the
    GPU-only panels, which return nothing without a GPU (and data with one)."""
    gpu = GpuMemorySampler().available
    empty = sorted(key for key, result in results.items()
                   if key[0] not in GPU_ONLY_PANELS and not shows_data(result))
    assert empty == [], f"panel queries without data: {empty}"
    gpu_results = {key: result for key, result in results.items() if key[0] in GPU_ONLY_PANELS}
    assert {key[0] for key in gpu_results} == GPU_ONLY_PANELS
    if gpu:
        assert all(shows_data(r) for r in gpu_results.values()), gpu_results
    else:
        assert all(r == [] for r in gpu_results.values()), gpu_results


def by_label(result: Result, label: str) -> dict[str, float]:
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}


def assert_panels_count_what_happened(results: dict[tuple[str, str], Result]) -> None:
    """The overview counts every initialization once, crashed replicas' included."""
    assert by_label(results[("Initializations in range", "A")], "outcome") == {
        "completed": COMPLETED, "failed": FAILED}
    assert float(results[("Failure ratio in range", "A")][0]["value"][1]) == (
        FAILED / (COMPLETED + FAILED))
    assert float(results[("Initializations in progress", "A")][0]["value"][1]) == STUCK
    assert by_label(results[("Initializations in progress by phase", "A")], "phase")[
        "placement_group"] == STUCK
    slowest = results[("Slowest phases in range", "C")]
    counts = {(r["metric"]["phase"]): float(r["value"][1]) for r in slowest}
    assert counts["download"] == COMPLETED + FAILED + STUCK
    assert counts["engine_init"] == COMPLETED + FAILED
    assert set(by_label(results[("Hook time by callback class", "A")], "callback")) == {
        "tests.dashboards.replica.Warmup"}


def check_rules(prom: Prometheus) -> None:
    """Every rule expression evaluates without error; Prometheus loaded and ran every rule."""
    for rule in promql.rules():
        prom.query(rule["expr"])  # raises on an error
    loaded = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
    assert sorted(r["name"] for r in loaded) == sorted(
        r.get("alert") or r["record"] for r in promql.rules())
    bad = [(r["name"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
    assert bad == []


def active_alerts(prom: Prometheus) -> set[tuple[str, str]]:
    alerts: Iterable[dict[str, Any]] = prom.api("alerts")["alerts"]
    return {(a["labels"]["alertname"], a["state"]) for a in alerts}


def assert_live_names(exposition: str, used: set[str]) -> None:
    """Every metric name the dashboard and rules use is one the exporter produced, and the
    only one it did not produce here is the GPU gauge (no GPU)."""
    produced = {line.split("{")[0].split(" ")[0] for line in exposition.splitlines()
                if line and not line.startswith("#")}
    produced = {n.removeprefix("ray_") for n in produced}
    missing = used - produced
    if not GpuMemorySampler().available:
        missing.discard(names.METRIC_GPU_MEMORY_USED)
    assert missing == set()
