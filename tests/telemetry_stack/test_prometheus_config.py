"""The Prometheus, Alertmanager and alert rule files: checked by Prometheus's own tools, unit
tested with promtool, and loaded by a real Prometheus server."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.dashboards import promql
from tests.support.net import free_port
from tests.support.prometheus import require_prometheus
from tests.telemetry_stack.tools import ROOT, TELEMETRY, run, tool


def alerts() -> list[dict[str, Any]]:
    return [r for r in promql.rules() if "alert" in r]


def test_promtool_checks_the_rules() -> None:
    """promtool parses every rule's PromQL and finds the rules well formed."""
    result = run(tool("promtool", "prometheus"), "check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(promql.rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    """alerts_test.yml: each alert fires on its series and stays quiet on the others."""
    result = run(tool("promtool", "prometheus"), "test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    """For every alert, some unit test expects it to fire and another expects it not to."""
    tests = yaml.safe_load((TELEMETRY / "alerts_test.yml").read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    for rule in alerts():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']} never fires in a test"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']} has no quiet test"


def test_every_alert_has_a_severity_summary_description_and_runbook() -> None:
    """Alerts carry what an on-call engineer needs: severity, summary, description and
    numbered runbook steps."""
    for rule in alerts():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        annotations = rule["annotations"]
        assert set(annotations) == {"summary", "description", "runbook"}, rule["alert"]
        assert annotations["runbook"].startswith("1. "), rule["alert"]
        assert "2. " in annotations["runbook"], rule["alert"]


def test_the_docs_list_every_alert_and_its_thresholds() -> None:
    """docs/dashboards.md names every alert and every threshold parameter of alerts.yml."""
    docs = (ROOT / "docs" / "dashboards.md").read_text()
    header = (TELEMETRY / "alerts.yml").read_text().split("groups:")[0]
    parameters = [line.split()[1] for line in header.splitlines()
                  if line.startswith("#   ") and line.split()[1].isupper()]
    assert len(parameters) >= 10
    missing = [name for name in [r["alert"] for r in alerts()] + parameters if name not in docs]
    assert missing == []


def test_promtool_checks_the_prometheus_config() -> None:
    """prometheus.yml is valid and its rule files load."""
    result = run(tool("promtool", "prometheus"), "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_amtool_checks_the_alertmanager_config() -> None:
    """alertmanager.yml is valid: routes, inhibit rules and receivers."""
    result = run(tool("amtool", "prometheus-alertmanager"), "check-config", "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_real_prometheus_runs_the_config(tmp_path: Path) -> None:
    """Prometheus starts on prometheus.yml as the compose stack mounts it: its three scrape
    jobs (Ray's service discovery file, the demo's Ray node, standalone targets) and every
    rule are loaded."""
    binary = require_prometheus()
    config_dir = tmp_path / "etc"
    shutil.copytree(TELEMETRY, config_dir)
    port = free_port()
    with (tmp_path / "log").open("wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={config_dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        rules = _get_when_ready(port, "rules")
        loaded = sorted(r["name"] for g in rules["groups"] for r in g["rules"])
        assert loaded == sorted(r.get("alert") or r["record"] for r in promql.rules())
        config = yaml.safe_load(_get_when_ready(port, "status/config")["yaml"])
        assert [j["job_name"] for j in config["scrape_configs"]] == ["ray", "ray-demo",
                                                                      "llm-init"]
    finally:
        process.terminate()
        process.wait(10)


def _get_when_ready(port: int, path: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}",
                                        timeout=2) as response:
                return json.load(response)["data"]
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
