"""Fixtures of the dashboard and alert rule tests."""

from __future__ import annotations

import pytest

from llm_init.telemetry import names


@pytest.fixture(autouse=True)
def _no_default_metrics_port(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test serves metrics on the default port."""
    monkeypatch.setenv(names.ENV_METRICS_PORT, "off")
