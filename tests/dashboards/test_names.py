"""The dashboard and the alert rules use only the names in ``llm_init.telemetry.names``: metric
names (under both exporters' spellings), label names and label values."""

from __future__ import annotations

import re

import pytest

from llm_init.phases import Phase
from llm_init.telemetry import names
from tests.dashboards import promql

EXPRESSIONS = ([(f"panel {q.panel!r} {q.ref_id}", q.expr) for q in promql.panel_queries()]
               + [(f"rule {r.get('alert') or r['record']}", r["expr"]) for r in promql.rules()])
# A label the dashboard filters on that the metrics do not carry yet: the Ray Serve application
# (``InitializationStarted.labels["application"]`` has it, MetricsCallback does not export it).
# With "All" (``.*``) the filter matches series without the label.
NOT_YET_EXPORTED = {"application"}
VALUES = {
    names.LABEL_PHASE: {p.value for p in Phase},
    names.LABEL_OUTCOME: {names.OUTCOME_COMPLETED, names.OUTCOME_FAILED, names.OUTCOME_ABANDONED},
    names.LABEL_BOUNDARY: {names.BOUNDARY_START, names.BOUNDARY_END},
    names.LABEL_SUBPHASE: set(names.ENGINE_SUBPHASES),
    names.LABEL_RESULT: {names.RESULT_HIT, names.RESULT_MISS, names.RESULT_ERROR,
                        names.RESULT_UNUSED},
    names.LABEL_DIRECTION: {names.DIRECTION_RESTORE, names.DIRECTION_PUBLISH},
}
_MATCHER = re.compile(r'\b([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


@pytest.mark.parametrize(("where", "expr"), EXPRESSIONS, ids=[w for w, _ in EXPRESSIONS])
def test_metric_names_are_the_exporters(where: str, expr: str) -> None:
    """Each metric selected is one the exporter produces (names constants, with a histogram's
    _bucket/_sum/_count), matched with or without Ray's ``ray_`` prefix."""
    used = promql.metric_names(expr)
    assert used or promql.recorded_names(expr), where
    assert used <= promql.EXPORTED
    assert promql.bare_metric_names(expr) == set(), "select as (ray_)?llm_init_... for Ray"


@pytest.mark.parametrize(("where", "expr"), EXPRESSIONS, ids=[w for w, _ in EXPRESSIONS])
def test_label_names_and_values_are_the_exporters(where: str, expr: str) -> None:
    """Grouping and matcher labels are the metrics' own (or ``le``); fixed label values are
    phases, outcomes, GPU boundaries and engine sub-phases that exist."""
    assert promql.grouping_labels(expr) <= promql.LABELS
    for label, op, value in _MATCHER.findall(expr):
        if label == "__name__":
            continue
        assert label in promql.LABELS | NOT_YET_EXPORTED, label
        if label in VALUES and op == "=":
            assert value in VALUES[label], (label, value)
        elif label in VALUES and op == "=~" and not value.startswith("$"):
            assert set(value.split("|")) <= VALUES[label], (label, value)


def test_recorded_series_the_alerts_use_are_recorded() -> None:
    """Alerts read only series that a recording rule of the same file writes."""
    recorded = {r["record"] for r in promql.rules() if "record" in r}
    used = {n for r in promql.rules() for n in promql.recorded_names(r["expr"])}
    assert used == recorded


def test_the_dashboard_covers_every_metric() -> None:
    """Every metric the exporter produces has a panel."""
    used = {n for q in promql.panel_queries() for n in promql.metric_names(q.expr)}
    bases = {re.sub(r"_(bucket|sum|count)$", "", n) if n.removesuffix("_total") == n else n
             for n in used}
    assert set(promql.HISTOGRAMS) | set(promql.SERIES) <= bases
