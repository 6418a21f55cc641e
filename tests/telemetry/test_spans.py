"""Specification of the spans of an initialization: tree, attributes, errors, and event links."""

from __future__ import annotations

import json

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from llm_init import (
    CallbackError,
    DefaultSteps,
    InMemoryEventStore,
    LLMConfig,
    initialize_node_sync,
    read_events,
)
from llm_init.telemetry import names, propagation
from tests.support.steps import CallingStep, local_steps
from tests.telemetry.callbacks import Failing, Quiet, Tracing

MODEL = "tiny-llama"


def run(provider: TracerProvider, store: InMemoryEventStore,
        steps: DefaultSteps | None = None, **config: object) -> str:
    settings: dict[str, object] = {"model_id": MODEL, "enable_metrics": False, **config}
    ctx = initialize_node_sync(LLMConfig(**settings),  # type: ignore[arg-type]  # settings of mixed types
                               event_store=store, steps=steps or local_steps(),
                               tracer_provider=provider)
    return ctx.init_id


def tree(spans: list[ReadableSpan]) -> list[str]:
    """The span names, indented by depth, children in start order."""
    by_parent: dict[int | None, list[ReadableSpan]] = {}
    for span in spans:
        parent = span.parent.span_id if span.parent else None
        by_parent.setdefault(parent, []).append(span)
    lines: list[str] = []

    def walk(parent: int | None, depth: int) -> None:
        for span in sorted(by_parent.get(parent, []), key=lambda s: s.start_time or 0):
            lines.append("  " * depth + span.name)
            walk(span.context.span_id, depth + 1)

    walk(None, 0)
    return lines


def named(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    (span,) = [s for s in spans if s.name == name]
    return span


def test_span_tree_is_root_phases_then_hooks_and_steps(
        provider: TracerProvider, exporter: InMemorySpanExporter,
        store: InMemoryEventStore) -> None:
    """One root per initialization, a child per phase, and a grandchild per hook call and step."""
    run(provider, store, callback_class=Tracing)
    assert tree(list(exporter.get_finished_spans())) == [
        "llm_init.initialize",
        "  llm_init.phase.pre_initialization",
        "  llm_init.phase.download",
        "    llm_init.hook.on_pre_download",
        "    llm_init.step.download",
        "  llm_init.phase.placement_group",
        "    llm_init.hook.on_pre_placement_group",
        "  llm_init.phase.engine_init",
        "    llm_init.step.engine",
        "    llm_init.hook.on_post_engine_init",
        "  llm_init.phase.post_initialization",
    ]


def test_root_span_names_the_model_and_outcome(
        provider: TracerProvider, exporter: InMemorySpanExporter,
        store: InMemoryEventStore) -> None:
    """The root span carries ``gen_ai.request.model``, the init id and the outcome."""
    init_id = run(provider, store)
    root = named(list(exporter.get_finished_spans()), names.SPAN_INITIALIZE)
    assert dict(root.attributes or {}) == {
        names.ATTR_MODEL: MODEL, names.ATTR_INIT_ID: init_id,
        names.ATTR_OUTCOME: names.OUTCOME_COMPLETED,
    }


def test_hook_span_carries_callback_hook_return_skip_and_changes(
        provider: TracerProvider, exporter: InMemorySpanExporter,
        store: InMemoryEventStore) -> None:
    """A hook's span names its callback and hook, its return value, the skip, what it changed."""
    run(provider, store, callback_class=Tracing)
    spans = list(exporter.get_finished_spans())
    callback = f"{Tracing.__module__}.Tracing"
    assert dict(named(spans, "llm_init.hook.on_post_engine_init").attributes or {}) == {
        names.ATTR_HOOK: "on_post_engine_init", names.ATTR_CALLBACK: callback,
        names.ATTR_RETURNED: '{"ok": true}', names.ATTR_CHANGED_FIELDS: ("custom_data",),
    }
    skipping = named(spans, "llm_init.hook.on_pre_placement_group").attributes or {}
    assert (skipping[names.ATTR_RETURNED], skipping[names.ATTR_SKIPPED_DEFAULT]) == ("false", True)


def test_hook_span_of_the_common_case_names_only_callback_and_hook(
        provider: TracerProvider, exporter: InMemorySpanExporter,
        store: InMemoryEventStore) -> None:
    """A hook that returned ``None``, changed nothing and skipped nothing has no outcome
    attributes: absent ``returned`` is null, absent ``changed_fields`` none, absent
    ``skipped_default`` false."""
    run(provider, store, callback_class=Quiet)
    span = named(list(exporter.get_finished_spans()), "llm_init.hook.on_pre_download")
    assert dict(span.attributes or {}) == {
        names.ATTR_HOOK: "on_pre_download", names.ATTR_CALLBACK: f"{Quiet.__module__}.Quiet",
    }


def test_step_span_that_changed_nothing_names_only_the_step(
        provider: TracerProvider, exporter: InMemorySpanExporter,
        store: InMemoryEventStore) -> None:
    """A default step that set no context field has no ``changed_fields`` attribute."""
    run(provider, store, steps=local_steps(engine=CallingStep(lambda ctx: None)))
    span = named(list(exporter.get_finished_spans()), "llm_init.step.engine")
    assert dict(span.attributes or {}) == {names.ATTR_STEP: "engine"}


def test_each_context_change_is_a_span_event_with_old_and_new(
        provider: TracerProvider, exporter: InMemorySpanExporter,
        store: InMemoryEventStore) -> None:
    """The span of the call that changed the context has one event per changed field or key."""
    run(provider, store, callback_class=Tracing)
    span = named(list(exporter.get_finished_spans()), "llm_init.hook.on_pre_download")
    assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
        (names.SPAN_EVENT_CONTEXT_CHANGED, {
            names.ATTR_FIELD: "custom_data", names.ATTR_KEY: "note",
            names.ATTR_OLD: "null", names.ATTR_NEW: json.dumps("before download"),
        }),
    ]


def test_step_span_lists_the_fields_the_step_set(
        provider: TracerProvider, exporter: InMemorySpanExporter,
        store: InMemoryEventStore) -> None:
    """A default step's span names the step and the context fields it set."""
    run(provider, store)
    span = named(list(exporter.get_finished_spans()), "llm_init.step.download")
    assert dict(span.attributes or {}) == {
        names.ATTR_STEP: "download", names.ATTR_CHANGED_FIELDS: ("download_result",),
    }


def test_failing_hook_records_error_on_its_span_and_reraises(
        provider: TracerProvider, exporter: InMemorySpanExporter,
        store: InMemoryEventStore) -> None:
    """A raising hook's span gets the exception and status ERROR; so do its phase and the root."""
    with pytest.raises(CallbackError):
        run(provider, store, callback_class=Failing)
    spans = list(exporter.get_finished_spans())
    statuses = {s.name: s.status.status_code for s in spans}
    assert statuses == {
        "llm_init.initialize": StatusCode.ERROR,
        "llm_init.phase.pre_initialization": StatusCode.UNSET,
        "llm_init.phase.download": StatusCode.ERROR,
        "llm_init.hook.on_pre_download": StatusCode.ERROR,
    }
    hook = named(spans, "llm_init.hook.on_pre_download")
    (event,) = hook.events
    assert (event.name, (event.attributes or {})["exception.type"]) == ("exception", "ValueError")


def test_failing_hook_under_continue_policy_leaves_an_error_span_and_a_finished_init(
        provider: TracerProvider, exporter: InMemorySpanExporter,
        store: InMemoryEventStore) -> None:
    """With ``raise_error_on_callback=False`` the hook span is ERROR and the root completes."""
    run(provider, store, callback_class=Failing, raise_error_on_callback=False)
    spans = list(exporter.get_finished_spans())
    assert named(spans, "llm_init.hook.on_pre_download").status.status_code == StatusCode.ERROR
    root = named(spans, names.SPAN_INITIALIZE)
    assert (root.status.status_code, (root.attributes or {})[names.ATTR_OUTCOME]) == (
        StatusCode.UNSET, names.OUTCOME_COMPLETED)


def test_every_event_names_the_span_it_was_emitted_under(
        provider: TracerProvider, exporter: InMemorySpanExporter,
        store: InMemoryEventStore) -> None:
    """Events carry the trace and span ids of the innermost span open when they were emitted."""
    init_id = run(provider, store, callback_class=Tracing)
    spans = {format(s.context.span_id, "016x"): s for s in exporter.get_finished_spans()}
    trace_ids = {format(s.context.trace_id, "032x") for s in spans.values()}
    seen = []
    for event in read_events(store, init_id):
        span = spans[event.span_id or ""]
        what = (getattr(event, "hook", None) or getattr(event, "step", None)
                or getattr(event, "phase", None) or "")
        seen.append((event.TYPE, what, span.name))
        assert {event.trace_id} == trace_ids
    assert ("HookStarted", "on_pre_download", "llm_init.hook.on_pre_download") in seen
    assert ("StepProgressed", "download", "llm_init.step.download") in seen
    assert ("PhaseStarted", "download", "llm_init.phase.download") in seen
    assert seen[0] == ("InitializationStarted", "", "llm_init.initialize")
    assert seen[-1] == ("InitializationCompleted", "", "llm_init.initialize")


def test_without_an_sdk_no_span_is_opened_and_events_carry_no_ids(
        store: InMemoryEventStore) -> None:
    """With the API's no-op provider, events have no trace or span id."""
    ctx = initialize_node_sync(LLMConfig(model_id=MODEL, enable_metrics=False),
                               event_store=store, steps=local_steps())
    assert {(e.trace_id, e.span_id) for e in read_events(store, ctx.init_id)} == {(None, None)}


def test_root_span_continues_the_trace_in_traceparent(
        provider: TracerProvider, exporter: InMemorySpanExporter, store: InMemoryEventStore,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A process started with ``TRACEPARENT`` hangs its initialization under that span."""
    parent = provider.get_tracer("test").start_span("serve replica start")
    env = propagation.env_vars(trace.set_span_in_context(parent))
    monkeypatch.setenv(names.ENV_TRACEPARENT, env[names.ENV_TRACEPARENT])
    run(provider, store)
    parent.end()
    root = named(list(exporter.get_finished_spans()), names.SPAN_INITIALIZE)
    assert root.parent is not None
    assert (root.parent.trace_id, root.parent.span_id) == (
        parent.get_span_context().trace_id, parent.get_span_context().span_id)
