"""Initializations that end abruptly still end in the log: a hook raising SystemExit or
KeyboardInterrupt, and a callback class whose constructor raises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from llm_init import (
    CallbackConfigError,
    InMemoryEventStore,
    LLMConfig,
    NodeInitializationContext,
    SQLiteEventStore,
    initialize_node_sync,
    read_events,
)
from llm_init.telemetry import names
from tests.support.steps import CallingStep, local_steps

ROOT = Path(__file__).resolve().parents[1]


class ExitingCallback:
    """Raises ``interrupt`` from on_pre_placement_group, as ``sys.exit()`` or Ctrl-C would."""

    def __init__(self, interrupt: str) -> None:
        self.interrupt = interrupt

    def on_pre_placement_group(self, ctx: NodeInitializationContext) -> None:
        raise SystemExit(3) if self.interrupt == "SystemExit" else KeyboardInterrupt()


class BrokenConstructorCallback:
    """A callback whose constructor fails on one of its kwargs."""

    def __init__(self, api_key: str, region: str) -> None:
        raise ValueError(f"region {region!r} is not served")

    def on_pre_download(self, ctx: NodeInitializationContext) -> None:
        pass


def cli(store: Path, *args: str) -> list[Any]:
    """The real ``llm-init`` command in a new process, as an operator runs it; its JSON
    lines."""
    proc = subprocess.run([sys.executable, "-m", "llm_init", *args, "--store", str(store),
                           "--json"], capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("interrupt", ["SystemExit", "KeyboardInterrupt"])
def test_a_hook_that_exits_is_recorded_as_failed_before_the_exit_goes_on(
        tmp_path: Path, interrupt: str) -> None:
    """SystemExit or KeyboardInterrupt from a hook still escapes, but the log read by a new
    process shows the hook, its phase and the initialization failed, not running."""
    path = tmp_path / "events.sqlite"
    store = SQLiteEventStore(path)
    with pytest.raises((SystemExit, KeyboardInterrupt)) as raised:
        initialize_node_sync(LLMConfig(model_id="m", callback_class=ExitingCallback,
                                       callback_kwargs={"interrupt": interrupt}),
                             event_store=store, steps=local_steps(), init_id="exits")
    store.close()
    assert type(raised.value).__name__ == interrupt
    events = read_events(SQLiteEventStore(path, create=False), "exits")
    assert [e.TYPE for e in events][-3:] == ["HookFailed", "PhaseFailed", "InitializationFailed"]
    hook_failed, phase_failed, init_failed = events[-3:]
    assert (hook_failed.hook, hook_failed.aborted) == (  # type: ignore[attr-defined]  # a field of the Event subclass read
        "on_pre_placement_group", True)
    assert phase_failed.phase == "placement_group"  # type: ignore[attr-defined]  # a field of the Event subclass read
    assert init_failed.error_type == interrupt  # type: ignore[attr-defined]  # a field of the Event subclass read
    assert cli(path, "status") == []  # nothing in progress
    [listed] = cli(path, "list")
    assert (listed["init_id"], listed["outcome"]) == ("exits", "failed")


def test_a_callback_constructor_that_raises_names_the_class_and_is_recorded(
        tmp_path: Path) -> None:
    """A raising constructor is a CallbackConfigError naming the class and its kwargs' keys
    (not their values), and the initialization is recorded as started and failed."""
    path = tmp_path / "events.sqlite"
    store = SQLiteEventStore(path)
    config = LLMConfig(model_id="m", callback_class=BrokenConstructorCallback,
                       callback_kwargs={"api_key": "sk-live-0123456789", "region": "mars-1"})
    with pytest.raises(CallbackConfigError) as raised:
        initialize_node_sync(config, event_store=store, steps=local_steps(), init_id="ctor")
    store.close()
    message = str(raised.value)
    assert "tests.test_runtime_crashes.BrokenConstructorCallback" in message
    assert "[api_key, region]" in message
    assert "sk-live-0123456789" not in message
    events = read_events(SQLiteEventStore(path, create=False), "ctor")
    assert [e.TYPE for e in events] == ["InitializationStarted", "InitializationFailed"]
    assert events[1].error_type == "CallbackConfigError"  # type: ignore[attr-defined]  # a field of the Event subclass read
    assert "BrokenConstructorCallback" in events[1].message  # type: ignore[attr-defined]  # a field of the Event subclass read
    assert "sk-live-0123456789" not in path.read_bytes().decode(errors="replace")


def test_an_exiting_hook_closes_its_hook_phase_and_initialization_spans_with_the_error(
        store: InMemoryEventStore) -> None:
    """The spans around a hook raising SystemExit all end with status ERROR and the exit's
    type, so a trace shows where the process was told to stop."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with pytest.raises(SystemExit):
        initialize_node_sync(LLMConfig(model_id="m", callback_class=ExitingCallback,
                                       callback_kwargs={"interrupt": "SystemExit"}),
                             event_store=store, steps=local_steps(), tracer_provider=provider)
    failed = {s.name: s.attributes.get(names.ATTR_ERROR_TYPE)  # type: ignore[union-attr]  # a finished span has attributes
              for s in exporter.get_finished_spans() if s.status.status_code is StatusCode.ERROR}
    assert failed == {names.SPAN_HOOK_PREFIX + "on_pre_placement_group": "SystemExit",
                      names.SPAN_PHASE_PREFIX + "placement_group": "SystemExit",
                      names.SPAN_INITIALIZE: "SystemExit"}


def test_an_exit_from_a_hook_run_in_a_thread_under_a_timeout_is_recorded_too(
        store: InMemoryEventStore) -> None:
    """With hook_timeout_s set (sync hooks run in a thread of their own), SystemExit from the
    hook still reaches the caller, after HookFailed, PhaseFailed and InitializationFailed."""
    with pytest.raises(SystemExit):
        initialize_node_sync(LLMConfig(model_id="m", callback_class=ExitingCallback,
                                       callback_kwargs={"interrupt": "SystemExit"},
                                       hook_timeout_s=30),
                             event_store=store, steps=local_steps(), init_id="threaded")
    events = read_events(store, "threaded")
    assert [e.TYPE for e in events][-3:] == ["HookFailed", "PhaseFailed", "InitializationFailed"]


def test_a_step_interrupted_by_ctrl_c_is_recorded_as_failed(store: InMemoryEventStore) -> None:
    """KeyboardInterrupt inside a default step reaches the caller after StepFailed, PhaseFailed
    and InitializationFailed."""

    def interrupt(ctx: NodeInitializationContext) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        initialize_node_sync(LLMConfig(model_id="m"), event_store=store, init_id="ctrl-c",
                             steps=local_steps(engine=CallingStep(interrupt)))
    events = read_events(store, "ctrl-c")
    assert [e.TYPE for e in events][-3:] == ["StepFailed", "PhaseFailed", "InitializationFailed"]
    assert events[-1].phase == "engine_init"  # type: ignore[attr-defined]  # a field of the Event subclass read
