"""The dashboard and the alert rules against a real Prometheus that scraped real
initializations of a fleet of stand-in replicas, as users scrape llm-init: each replica's
standalone endpoint, or a Ray node's metrics endpoint (``ray_`` prefix, Ray's labels)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.dashboards import fleets, live, promql
from tests.support.prometheus import require_prometheus


@pytest.fixture(scope="module", params=[
    "standalone", pytest.param("ray", marks=[pytest.mark.ray])])
def fleet(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[fleets.Fleet]:
    binary = require_prometheus()
    start = fleets.ray_fleet if request.param == "ray" else fleets.standalone_fleet
    with start(tmp_path_factory.mktemp(request.param), binary) as running:
        running.results = live.run_panel_queries(running.prom)
        yield running


def test_every_panel_query_returns_data(fleet: fleets.Fleet) -> None:
    """Every query of every panel returns a value above zero; the GPU-only panels return
    nothing on a machine without a GPU (never zeros)."""
    live.assert_every_panel_shows_data(fleet.results)


def test_panels_count_each_initialization_once(fleet: fleets.Fleet) -> None:
    """Replicas initialize once and crashed ones vanish, yet the overview counts 2 completed,
    2 failed and 1 in progress, the table every phase that ended, and hooks by class."""
    live.assert_panels_count_what_happened(fleet.results)


def test_rules_evaluate_and_the_failures_and_stuck_placement_group_are_pending(
        fleet: fleets.Fleet) -> None:
    """Every rule evaluates without error; with half the initializations failed and one
    placement group waiting, exactly those two alerts are pending (their for: has not passed)."""
    live.check_rules(fleet.prom)
    wanted = {("LLMInitInitializationsFailing", "pending"),
              ("LLMInitPlacementGroupPending", "pending")}
    deadline = time.monotonic() + 10
    while live.active_alerts(fleet.prom) != wanted and time.monotonic() < deadline:
        time.sleep(0.2)
    assert live.active_alerts(fleet.prom) == wanted


def test_dashboard_and_rules_use_only_metrics_the_exporter_produces(
        fleet: fleets.Fleet) -> None:
    """Every metric name in the panels and rules is in the live /metrics output."""
    used = {name for q in promql.panel_queries() for name in promql.metric_names(q.expr)}
    used |= {name for r in promql.rules() for name in promql.metric_names(r["expr"])}
    live.assert_live_names(fleet.exposition, used)
