"""The generated dashboard: the committed JSON is the generator's output, and every panel is
complete (description, unit, data source, explicit query ref ids, readable legends)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dashboards import generate
from llm_init.telemetry import names
from tests.dashboards import promql

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (str(promql.ROOT), os.environ.get("PYTHONPATH", "")) if p)}


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "dashboards/generate.py", "--check", *args],
                          cwd=promql.ROOT, env=ENV, capture_output=True, text=True,
                          timeout=120, check=False)


def test_committed_json_is_what_the_generator_produces() -> None:
    """``generate.py --check`` passes on the committed JSON (run python dashboards/generate.py
    after changing the generator)."""
    result = check()
    assert result.returncode == 0, result.stderr
    assert promql.DASHBOARD.read_text() == generate.render()


def test_check_fails_when_the_json_differs(tmp_path: Path) -> None:
    """A hand edit of the JSON (or a stale file) fails the check and says how to fix it."""
    edited = tmp_path / "dashboard.json"
    edited.write_text(promql.DASHBOARD.read_text().replace('"refresh": "30s"',
                                                          '"refresh": "5s"'))
    result = check("--output", str(edited))
    assert result.returncode == 1
    assert "out of date: run python dashboards/generate.py" in result.stderr


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return promql.dashboard()


def test_template_variables(dashboard: dict[str, Any]) -> None:
    """Data source (Prometheus), model and Ray Serve application, in that order; model and
    application offer "All" as the regex ``.*``."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert list(variables) == ["datasource", "model", "application"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("model", "application"):
        variable = variables[name]
        assert variable["type"] == "query"
        assert variable["includeAll"]
        assert variable["allValue"] == ".*"
        assert variable["datasource"]["uid"] == "${datasource}"
        assert variable["query"].startswith('label_values({__name__=~"(ray_)?llm_init_')
        assert variable["query"].endswith(f", {name})")


def test_every_panel_has_a_description_unit_and_the_variable_data_source(
        dashboard: dict[str, Any]) -> None:
    """Panels say what they show and in which unit, and query the chosen data source."""
    for panel in promql.panels():
        title = panel["title"]
        assert len(panel.get("description", "")) > 40, title
        unit = (panel["options"]["yAxis"]["unit"] if panel["type"] == "heatmap"
                else panel["fieldConfig"]["defaults"]["unit"])
        assert unit, title
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title


def test_every_query_has_an_explicit_ref_id_and_a_legend(dashboard: dict[str, Any]) -> None:
    """Queries are A, B, C... in order, each on the panel's data source, and time series
    legends name their series by label."""
    for panel in promql.panels():
        targets = panel["targets"]
        assert [t["refId"] for t in targets] == [chr(ord("A") + i) for i in range(len(targets))]
        for target in targets:
            assert target["datasource"]["uid"] == "${datasource}"
            if target["format"] == "time_series" and not target.get("instant"):
                assert "{{" in target["legendFormat"], (panel["title"], target["refId"])


def test_panels_are_laid_out_without_overlap(dashboard: dict[str, Any]) -> None:
    """Unique ids and titles; panels fit the 24-column grid and do not overlap."""
    all_panels = dashboard["panels"]
    assert len({p["id"] for p in all_panels}) == len(all_panels)
    titles = [p["title"] for p in promql.panels()]
    assert len(set(titles)) == len(titles)
    cells: set[tuple[int, int]] = set()
    for panel in all_panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, panel["title"]
        cells |= mine


def test_the_gpu_only_panels_exist_and_read_the_gpu_gauge() -> None:
    """The panels listed as GPU-only are the ones, and the only ones, on NVML's gauge."""
    gpu_metric = names.METRIC_GPU_MEMORY_USED
    reading = {q.panel for q in promql.panel_queries() if gpu_metric in q.expr}
    assert reading == generate.GPU_ONLY_PANELS


def test_every_query_filters_on_the_application_and_model_variables() -> None:
    """Every selector filters on ``$application``; on ``$model`` too, except for the hook
    duration histogram, which has no model label."""
    for query in promql.panel_queries():
        selectors = query.expr.count("__name__=~")
        assert query.expr.count('application=~"$application"') == selectors, query
        hooks = query.expr.count(names.METRIC_HOOK_DURATION)
        assert query.expr.count('model=~"$model"') == selectors - hooks, query
