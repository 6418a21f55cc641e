"""Specification of telemetry failure reporting: one warning per outage."""

from __future__ import annotations

import logging

import pytest

from llm_init.telemetry import health


def levels(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records]


def test_repeated_failures_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    """The first failure of a kind is a warning; repeats are debug lines."""
    caplog.set_level(logging.DEBUG, logger="llm_init")
    assert health.failed("traces", "down") is True
    assert health.failed("traces", "still down") is False
    assert levels(caplog) == [(logging.WARNING, "down"), (logging.DEBUG, "still down (repeated)")]


def test_recovery_rearms_the_warning(caplog: pytest.LogCaptureFixture) -> None:
    """After a success, the next failure of that kind warns again."""
    caplog.set_level(logging.INFO, logger="llm_init")
    health.failed("metrics", "port taken")
    health.recovered("metrics")
    health.failed("metrics", "port taken again")
    assert levels(caplog) == [(logging.WARNING, "port taken"),
                              (logging.INFO, "metrics telemetry works again"),
                              (logging.WARNING, "port taken again")]


def test_kinds_are_independent(caplog: pytest.LogCaptureFixture) -> None:
    """A failing exporter does not silence a failing metrics server."""
    caplog.set_level(logging.WARNING, logger="llm_init")
    health.failed("traces", "a")
    health.failed("metrics", "b")
    assert levels(caplog) == [(logging.WARNING, "a"), (logging.WARNING, "b")]


def test_messages_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    """Endpoints with credentials are masked in the warning."""
    caplog.set_level(logging.WARNING, logger="llm_init")
    health.failed("traces", "cannot reach https://u:p@collector/v1/traces")
    assert levels(caplog) == [(logging.WARNING, "cannot reach https://***@collector/v1/traces")]
