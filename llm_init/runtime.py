"""``initialize_node``: the five phases in order, each hook and step through the dispatcher."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry import trace

from llm_init.callbacks import EventObserver, bind_hooks, callback_name
from llm_init.config import LLMConfig
from llm_init.context import NodeInitializationContext
from llm_init.dispatch import Dispatcher
from llm_init.errors import LLMInitError
from llm_init.events import (
    InitializationCompleted,
    InitializationFailed,
    InitializationStarted,
    PhaseCompleted,
    PhaseFailed,
    PhaseSkipped,
    PhaseStarted,
)
from llm_init.phases import PHASES, PhaseSpec
from llm_init.recorder import EventRecorder
from llm_init.steps.base import DefaultSteps
from llm_init.stores import EventStore, open_store
from llm_init.summary import json_safe
from llm_init.telemetry import names

_tracer = trace.get_tracer(names.INSTRUMENTATION_NAME)


def new_init_id() -> str:
    return uuid.uuid4().hex


async def initialize_node(
    llm_config: LLMConfig,
    *,
    event_store: EventStore | None = None,
    steps: DefaultSteps | None = None,
    observers: Sequence[EventObserver] = (),
    init_id: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> NodeInitializationContext:
    """Run pre-initialization, download, placement group, engine init and post-initialization,
    with every hook and default step recorded in ``event_store``; return the final context."""
    store = event_store if event_store is not None else open_store()
    ctx = NodeInitializationContext.for_config(init_id or new_init_id(), llm_config)
    callbacks = llm_config.get_or_create_callbacks()
    watchers = [cb for cb in callbacks if callable(getattr(cb, "on_event", None))]
    recorder = EventRecorder(ctx.init_id, store, [*watchers, *observers])  # type: ignore[list-item]
    dispatcher = Dispatcher(ctx, recorder, bind_hooks(callbacks),
                            raise_errors=llm_config.raise_error_on_callback,
                            hook_timeout_s=llm_config.hook_timeout_s)
    run = _Run(ctx, recorder, dispatcher, steps or DefaultSteps())
    attributes = {names.ATTR_INIT_ID: ctx.init_id, names.ATTR_MODEL: llm_config.model_id}
    with _tracer.start_as_current_span(names.SPAN_INITIALIZE, attributes=attributes,
                                       record_exception=False,
                                       set_status_on_exception=False) as span:
        recorder.record(
            InitializationStarted, model_id=llm_config.model_id,
            config=json_safe(_config_summary(llm_config)), context=ctx.snapshot(),
            callbacks=tuple(callback_name(cb) for cb in callbacks),
            host=socket.gethostname(), pid=os.getpid(), labels=dict(labels or {}),
        )
        started = time.perf_counter()
        phase: str | None = None
        try:
            for spec in PHASES:
                phase = spec.phase.value
                await run.phase(spec)
        except (Exception, asyncio.CancelledError) as exc:
            recorder.record(InitializationFailed, duration_s=time.perf_counter() - started,
                            phase=phase, error_type=type(exc).__name__, message=str(exc))
            span.set_attribute(names.ATTR_OUTCOME, "failed")
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
            raise
        recorder.record(InitializationCompleted, duration_s=time.perf_counter() - started)
        span.set_attribute(names.ATTR_OUTCOME, "completed")
    return ctx


def initialize_node_sync(llm_config: LLMConfig, **kwargs: Any) -> NodeInitializationContext:
    """Blocking twin of ``initialize_node``; safe to call from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(initialize_node(llm_config, **kwargs))
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["ctx"] = asyncio.run(initialize_node(llm_config, **kwargs))
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="llm-init-initialize")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    ctx: NodeInitializationContext = box["ctx"]
    return ctx


class _Run:
    """The phase loop of one initialization, and who skipped what."""

    def __init__(self, ctx: NodeInitializationContext, recorder: EventRecorder,
                 dispatcher: Dispatcher, steps: DefaultSteps) -> None:
        self.ctx = ctx
        self.recorder = recorder
        self.dispatcher = dispatcher
        self.steps = steps
        self.skip_all_by: str | None = None

    async def phase(self, spec: PhaseSpec) -> None:
        phase = spec.phase.value
        rec = self.recorder
        with _tracer.start_as_current_span(names.SPAN_PHASE_PREFIX + phase,
                                           attributes={names.ATTR_PHASE: phase},
                                           record_exception=False,
                                           set_status_on_exception=False) as span:
            rec.record(PhaseStarted, phase=phase)
            started = time.perf_counter()
            try:
                skipped_by = None
                if spec.pre_hook is not None:
                    skipped_by = await self.dispatcher.call_hook(phase, spec.pre_hook)
                    if spec.pre_hook == "on_pre_initialization" and skipped_by:
                        self.skip_all_by = skipped_by
                if spec.step is not None:
                    skipper, hook = ((self.skip_all_by, "on_pre_initialization")
                                     if self.skip_all_by else (skipped_by, spec.pre_hook))
                    if skipper:
                        rec.record(PhaseSkipped, phase=phase, step=spec.step,
                                   skipped_by=skipper, hook=hook or "")
                    else:
                        await self.dispatcher.run_step(phase, spec.step,
                                                       self.steps.for_name(spec.step))
                if spec.post_hook is not None:
                    await self.dispatcher.call_hook(phase, spec.post_hook)
            except (LLMInitError, asyncio.CancelledError) as exc:
                rec.record(PhaseFailed, phase=phase, duration_s=time.perf_counter() - started,
                           error_type=type(exc).__name__, message=str(exc))
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
                raise
            rec.record(PhaseCompleted, phase=phase, duration_s=time.perf_counter() - started)


def _config_summary(config: LLMConfig) -> dict[str, Any]:
    summary = config.to_dict()
    summary["callback_class"] = [callback_name(c) for c in config.callback_classes]
    return summary
