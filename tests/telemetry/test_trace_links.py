"""From ``llm-init timeline`` to the trace and back: ids and links in the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llm_init import LLMConfig, SQLiteEventStore, initialize_node_sync
from llm_init.telemetry import names
from tests.support.cli import invoke
from tests.support.steps import local_steps
from tests.telemetry.callbacks import Tracing


@pytest.fixture
def recorded(tmp_path: Path, provider: TracerProvider,
             exporter: InMemorySpanExporter) -> tuple[str, str, dict[str, str]]:
    """A traced initialization in a SQLite store: (store path, init id, span ids by name)."""
    path = tmp_path / "events.sqlite"
    store = SQLiteEventStore(path)
    ctx = initialize_node_sync(LLMConfig(model_id="m", callback_class=Tracing,
                                         enable_metrics=False),
                               event_store=store, steps=local_steps(), tracer_provider=provider)
    store.close()
    spans = {s.name: format(s.context.span_id, "016x") for s in exporter.get_finished_spans()}
    spans["trace"] = format(exporter.get_finished_spans()[0].context.trace_id, "032x")
    return str(path), ctx.init_id, spans


def cli(*args: str, **env: str) -> str:
    result = invoke(*args, width=250, env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_timeline_links_to_the_trace(recorded: tuple[str, str, dict[str, str]]) -> None:
    """The timeline's head names the trace, with a link built from ``LLM_INIT_TRACE_URL``."""
    path, init_id, spans = recorded
    out = cli("timeline", init_id, "--store", path,
              **{names.ENV_TRACE_URL: "http://jaeger:16686/trace/{trace_id}"})
    assert f"trace {spans['trace']}  http://jaeger:16686/trace/{spans['trace']}" in out


def test_timeline_shows_each_entrys_span(recorded: tuple[str, str, dict[str, str]]) -> None:
    """With ``--spans`` every phase, step and hook line ends with its span id."""
    path, init_id, spans = recorded
    lines = cli("timeline", init_id, "--store", path, "--spans").splitlines()
    hook_line = next(line for line in lines if "hook on_pre_download" in line)
    assert hook_line.endswith(f"span {spans['llm_init.hook.on_pre_download']}")


def test_events_of_one_span_lead_back_from_the_trace(
        recorded: tuple[str, str, dict[str, str]]) -> None:
    """``events --span`` lists what was recorded under one span seen in the trace."""
    path, init_id, spans = recorded
    out = cli("events", init_id, "--store", path, "--json",
              "--span", spans["llm_init.hook.on_pre_download"])
    assert [(e["type"], e["data"].get("hook")) for e in map(json.loads, out.splitlines())] == [
        ("HookStarted", "on_pre_download"), ("ContextChanged", "on_pre_download"),
        ("HookCompleted", "on_pre_download")]


def test_span_events_carry_the_exported_context_changes(
        tmp_path: Path, provider: TracerProvider, exporter: InMemorySpanExporter) -> None:
    """Each ``ContextChanged`` that ``export`` writes is a ``llm_init.context.changed`` event
    on the span its ``data.span_id`` names, with ``data``'s field, key (when there is one), old
    and new (these two as JSON text) under ``llm_init.context.``."""
    path = tmp_path / "events.sqlite"
    store = SQLiteEventStore(path)
    ctx = initialize_node_sync(LLMConfig(model_id="m", callback_class=Tracing,
                                         enable_metrics=False),
                               event_store=store, steps=local_steps(), tracer_provider=provider)
    store.close()
    exported = [json.loads(line) for line in cli("export", ctx.init_id, "--store", str(path))
                .splitlines()]
    from_log = [(e["data"]["span_id"], {k: e["data"][k] for k in ("field", "key", "old", "new")
                                        if k != "key" or e["data"][k] is not None})
                for e in exported if e["type"] == "ContextChanged"]
    prefix = "llm_init.context."
    from_spans = [(format(s.context.span_id, "016x"),
                   {a[len(prefix):]: json.loads(v) if a in (names.ATTR_OLD, names.ATTR_NEW) else v
                    for a, v in (ev.attributes or {}).items()})
                  for s in sorted(exporter.get_finished_spans(), key=lambda s: s.start_time or 0)
                  for ev in s.events if ev.name == names.SPAN_EVENT_CONTEXT_CHANGED]
    assert from_spans == from_log
    assert len(from_log) == 4  # two hooks' custom_data, the steps' download_result and engine
