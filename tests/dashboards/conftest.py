"""Fixtures of the dashboard and alert rule tests: Prometheus, and no stray metrics port."""

from __future__ import annotations

import pytest

from llm_init.telemetry import names
from tests.support.prometheus import start_prometheus  # noqa: F401  (a fixture)


@pytest.fixture(autouse=True)
def _no_default_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test serves metrics on the default port."""
    monkeypatch.setenv(names.ENV_METRICS_PORT, "off")
