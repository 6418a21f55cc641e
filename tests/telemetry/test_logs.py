"""Specification of the structured logs: one line per event, ids on every line, JSON or console."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from llm_init import InMemoryEventStore, LLMConfig, initialize_node_sync, read_events
from llm_init.telemetry import health
from llm_init.telemetry.logs import configure_logging
from tests.support.steps import local_steps
from tests.telemetry.callbacks import Failing, Tracing

CALLBACK = f"{Tracing.__module__}.Tracing"


def initialize(store: InMemoryEventStore, provider: TracerProvider | None = None) -> str:
    ctx = initialize_node_sync(LLMConfig(model_id="tiny-llama", callback_class=Tracing,
                                         enable_metrics=False),
                               event_store=store, steps=local_steps(), tracer_provider=provider)
    return ctx.init_id


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_debug_lines_follow_the_initialization_event_by_event(
        store: InMemoryEventStore, provider: TracerProvider) -> None:
    """At DEBUG there is one JSON line per recorded event, in order."""
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream, fmt="json")
    init_id = initialize(store, provider)
    assert [(d["event"], d["sequence"]) for d in json_lines(stream)] == [
        (e.TYPE, e.sequence) for e in read_events(store, init_id)]


def test_info_shows_one_line_when_the_initialization_ends(
        store: InMemoryEventStore, provider: TracerProvider) -> None:
    """At INFO a completed initialization writes a single line: its end, with the outcome,
    the total and each phase's duration."""
    stream = io.StringIO()
    configure_logging("INFO", stream=stream, fmt="json")
    init_id = initialize(store, provider)
    (line,) = json_lines(stream)
    phases = {e.phase: e.duration_s for e in read_events(store, init_id)  # type: ignore[attr-defined]  # a field of the Event subclass read
              if e.TYPE == "PhaseCompleted"}
    assert {k: line[k] for k in ("event", "level", "init_id", "outcome", "phase_durations_s")} == {
        "event": "InitializationCompleted", "level": "info", "init_id": init_id,
        "outcome": "completed", "phase_durations_s": phases}
    assert list(phases) == ["pre_initialization", "download", "placement_group", "engine_init",
                            "post_initialization"]
    assert line["duration_s"] >= sum(phases.values())


def test_info_shows_one_line_per_failure(store: InMemoryEventStore) -> None:
    """At INFO a failing hook writes its failure, its phase's and the initialization's end
    (outcome failed, with the phases that ran), each once."""
    stream = io.StringIO()
    configure_logging("INFO", stream=stream, fmt="json")
    with pytest.raises(Exception, match="cannot reach"):
        initialize_node_sync(LLMConfig(model_id="tiny-llama", callback_class=Failing,
                                       enable_metrics=False),
                             event_store=store, steps=local_steps())
    lines = json_lines(stream)
    assert [(d["event"], d["level"], d.get("phase")) for d in lines] == [
        ("HookFailed", "error", "download"), ("PhaseFailed", "error", "download"),
        ("InitializationFailed", "error", "download")]
    assert lines[-1]["outcome"] == "failed"
    assert list(lines[-1]["phase_durations_s"]) == ["pre_initialization", "download"]


def test_every_hook_line_carries_init_phase_hook_callback_and_span_ids(
        store: InMemoryEventStore, provider: TracerProvider) -> None:
    """Hook lines (DEBUG included) name the init, phase, hook, callback, trace and span, and
    the ids are those of the event the line reports."""
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream, fmt="json")
    init_id = initialize(store, provider)
    events = {e.sequence: e for e in read_events(store, init_id)}
    hook_lines = [d for d in json_lines(stream) if d["event"].startswith("Hook")]
    assert [(d["event"], d["hook"]) for d in hook_lines] == [
        ("HookStarted", "on_pre_download"), ("HookCompleted", "on_pre_download"),
        ("HookStarted", "on_pre_placement_group"), ("HookCompleted", "on_pre_placement_group"),
        ("HookStarted", "on_post_engine_init"), ("HookCompleted", "on_post_engine_init"),
    ]
    for line in hook_lines:
        event = events[line["sequence"]]
        assert (line["init_id"], line["callback"], line["phase"], line["level"]) == (
            init_id, CALLBACK, event.phase, "debug")  # type: ignore[attr-defined]  # a field of the Event subclass read
        assert (line["trace_id"], line["span_id"]) == (event.trace_id, event.span_id)
        assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"])
        assert re.fullmatch(r"[0-9a-f]{16}", line["span_id"])


def test_lines_outside_a_span_have_no_trace_ids(store: InMemoryEventStore) -> None:
    """Without tracing no line carries ``trace_id`` or ``span_id``."""
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream, fmt="json")
    initialize(store)
    assert [d for d in json_lines(stream) if "trace_id" in d or "span_id" in d] == []


def test_terminal_gets_console_lines_for_humans(store: InMemoryEventStore) -> None:
    """On a terminal (a real pseudo-terminal here) lines are rendered for humans, not JSON."""
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as tty:
        configure_logging("INFO", stream=tty, fmt="auto")
        initialize(store)
        tty.flush()
        text = os.read(leader, 1 << 16).decode(errors="replace")
    os.close(leader)
    first = text.splitlines()[0]
    assert "InitializationCompleted" in first
    assert not first.lstrip().startswith("{")
    assert "\x1b[" in text  # colours


def test_unconfigured_library_prints_nothing(store: InMemoryEventStore,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    """Before the application configures logging, an initialization writes no log lines."""
    logging.getLogger("llm_init").propagate = False  # keep pytest's own log capture out of it
    initialize(store)
    assert capfd.readouterr() == ("", "")


def test_telemetry_warnings_are_json_lines_too() -> None:
    """A telemetry warning comes out through the same handler, as a redacted JSON line."""
    stream = io.StringIO()
    configure_logging("INFO", stream=stream, fmt="json")
    health.failed("traces", "cannot export to https://user:s3cret@collector:4318/v1/traces")
    (line,) = json_lines(stream)
    assert {k: line[k] for k in ("event", "level", "logger")} == {
        "event": "cannot export to https://***@collector:4318/v1/traces",
        "level": "warning", "logger": "llm_init.telemetry"}
