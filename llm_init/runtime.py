"""``initialize_node``: the five phases in order, each hook and step through the dispatcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.trace import Span, TracerProvider

from llm_init.binding import bind_hooks, callback_name
from llm_init.callbacks import EventObserver
from llm_init.config import LLMConfig
from llm_init.context import NodeInitializationContext
from llm_init.dispatch import INTERRUPTS, Dispatcher
from llm_init.errors import CallbackConfigError, EventStoreError, LLMInitError
from llm_init.events import (
    DownloadOverlapped,
    InitializationCompleted,
    InitializationFailed,
    InitializationStarted,
    PhaseCompleted,
    PhaseFailed,
    PhaseSkipped,
    PhaseStarted,
    ReplicaLaunched,
)
from llm_init.heartbeat import Heartbeat, sweep_in_background
from llm_init.launch import ReplicaLaunch
from llm_init.liveness import heartbeat_interval
from llm_init.overlap import WeightsOverlap, reset_overlap, use_overlap
from llm_init.phases import PHASES, Phase, PhaseSpec
from llm_init.recorder import EventRecorder
from llm_init.steps.base import DefaultSteps
from llm_init.stores import EventStore, open_store
from llm_init.summary import identifiers, json_safe
from llm_init.telemetry import names, propagation, spans
from llm_init.telemetry.logs import LogObserver
from llm_init.telemetry.metrics import MetricsCallback
from llm_init.telemetry.redaction import exception_message, redact_identifier, redact_text

_log = logging.getLogger(__name__)


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
    tracer_provider: TracerProvider | None = None,
    launch: ReplicaLaunch | None = None,
    heartbeat_interval_s: float | None = None,
) -> NodeInitializationContext:
    """Run pre-initialization, download, placement group, engine init and post-initialization,
    with every hook and default step recorded in ``event_store``; return the final context.

    Spans go to ``tracer_provider`` (default: the global one; none without an SDK). Metrics
    (``llm_config.enable_metrics``) and log lines come from observers added here unless
    ``observers`` or the callbacks already include a ``MetricsCallback``/``LogObserver``.
    ``launch`` (a Serve replica's build and process start times) is recorded as a
    ``ReplicaLaunched`` event right after ``InitializationStarted``.
    A ``HeartbeatRecorded`` event is recorded every ``heartbeat_interval_s`` while it runs
    (default ``LLM_INIT_HEARTBEAT_INTERVAL_S``, else 5 s; 0 records none), and at its start
    the unfinished initializations of this host whose process is gone are closed as
    abandoned (``llm_init.heartbeat``).
    """
    interval = heartbeat_interval(heartbeat_interval_s)
    store = event_store if event_store is not None else open_store()
    ctx = NodeInitializationContext.for_config(init_id or new_init_id(), llm_config)
    try:
        callbacks = llm_config.get_or_create_callbacks()
    except CallbackConfigError as exc:
        # No callbacks, so no hooks: the initialization is recorded as started and failed.
        _record_unstarted(ctx, store, exc, observers, labels, tracer_provider)
        raise
    watchers = [cb for cb in callbacks if callable(getattr(cb, "on_event", None))]
    watchers += [*observers, *_builtin_observers(llm_config, [*watchers, *observers])]
    recorder = EventRecorder(ctx.init_id, store, watchers,  # type: ignore[arg-type]  # duck-typed above
                             flush_interval_s=_env_float(names.ENV_EVENT_FLUSH_INTERVAL,
                                                         names.DEFAULT_EVENT_FLUSH_INTERVAL_S))
    tracer = spans.tracer_for(tracer_provider)
    dispatcher = Dispatcher(ctx, recorder, bind_hooks(callbacks),
                            raise_errors=llm_config.raise_error_on_callback,
                            hook_timeout_s=llm_config.hook_timeout_s, tracer=tracer)
    run = _Run(ctx, recorder, dispatcher,
               _with_warm_start(steps or DefaultSteps(), llm_config))
    model_id = redact_identifier(llm_config.model_id)
    host = socket.gethostname()
    sweeper = sweep_in_background(store, host=host, observers=[
        w for w in watchers if isinstance(w, MetricsCallback | LogObserver)])
    heartbeat = Heartbeat(recorder, interval)
    tracer_token = spans.use_tracer(tracer)
    overlap = WeightsOverlap() if llm_config.overlap_weights else None
    overlap_token = use_overlap(overlap)
    root = spans.start(tracer, names.SPAN_INITIALIZE,
                       {names.ATTR_INIT_ID: ctx.init_id, names.ATTR_MODEL: model_id},
                       context=propagation.parent_context() if tracer else None)
    try:
        with root as span:
            started = time.perf_counter()
            phase: str | None = None
            try:
                recorder.record(
                    InitializationStarted, model_id=model_id,
                    config=json_safe(_config_summary(llm_config)), context=ctx.snapshot(),
                    callbacks=tuple(callback_name(cb) for cb in callbacks),
                    host=host, pid=os.getpid(), labels=identifiers(dict(labels or {})),
                    heartbeat_interval_s=interval or None,
                )
                if launch is not None:
                    scheduling_s, boot_s = launch.segments(time.time())
                    recorder.record(ReplicaLaunched, app_built_at=launch.app_built_at,
                                    process_started_at=launch.process_started_at,
                                    scheduling_s=scheduling_s, boot_s=boot_s)
                heartbeat.start()
                for spec in PHASES:
                    phase = spec.phase.value
                    if overlap is not None and spec.phase is Phase.DOWNLOAD:
                        await run.download_alongside(spec, overlap)
                        continue
                    if spec.phase is Phase.POST_INITIALIZATION:
                        await run.download_joined()
                    await run.phase(spec)
            except (Exception, *INTERRUPTS) as exc:
                cause, phase = await run.download_abandoned(exc, phase)
                heartbeat.stop()
                _record_failure(recorder, span, cause, time.perf_counter() - started, phase)
                if cause is exc:
                    raise
                raise cause from exc
            heartbeat.stop()
            recorder.record(InitializationCompleted, duration_s=time.perf_counter() - started)
            span.set_attribute(names.ATTR_OUTCOME, names.OUTCOME_COMPLETED)
    finally:
        reset_overlap(overlap_token)
        spans.reset_tracer(tracer_token)
        heartbeat.stop()
        recorder.close()
        if sweeper.is_alive():  # a slow store: wait for it off the event loop, boundedly
            await asyncio.to_thread(sweeper.join, 10.0)
        if tracer is not None:
            await asyncio.to_thread(spans.flush, tracer_provider, _env_float(
                names.ENV_TRACE_FLUSH_TIMEOUT, names.DEFAULT_TRACE_FLUSH_TIMEOUT_S))
    return ctx


def _record_failure(recorder: EventRecorder, span: Span, exc: BaseException, duration_s: float,
                    phase: str | None) -> None:
    """``InitializationFailed`` for ``exc`` and the root span's error; ``exc`` is what the
    caller sees, even when the store refuses this record too (that refusal is logged)."""
    span.set_attribute(names.ATTR_OUTCOME, names.OUTCOME_FAILED)
    spans.record_error(span, exc)
    try:
        recorder.record(InitializationFailed, duration_s=duration_s, phase=phase,
                        error_type=type(exc).__name__, message=redact_text(str(exc)))
    except EventStoreError as refused:
        _log.error("the failure of initialization %s is not recorded: %s",
                   recorder.init_id, refused)


def _record_unstarted(ctx: NodeInitializationContext, store: EventStore,
                      exc: CallbackConfigError, observers: Sequence[EventObserver],
                      labels: Mapping[str, str] | None,
                      tracer_provider: TracerProvider | None) -> None:
    """Record an initialization whose callbacks could not be created: started, then failed."""
    config = ctx.llm_config
    recorder = EventRecorder(ctx.init_id, store,
                             [*observers, *_builtin_observers(config, observers)])
    model_id = redact_identifier(config.model_id)
    tracer = spans.tracer_for(tracer_provider)
    try:
        with spans.start(tracer, names.SPAN_INITIALIZE,
                         {names.ATTR_INIT_ID: ctx.init_id, names.ATTR_MODEL: model_id},
                         context=propagation.parent_context() if tracer else None) as span:
            recorder.record(
                InitializationStarted, model_id=model_id,
                config=json_safe(_config_summary(config)), context=ctx.snapshot(),
                callbacks=tuple(callback_name(c) for c in config.callback_classes),
                host=socket.gethostname(), pid=os.getpid(),
                labels=identifiers(dict(labels or {})))
            _record_failure(recorder, span, exc, 0.0, None)
        recorder.close()
    except EventStoreError as refused:  # the caller hears of the callback, the log of this
        _log.error("initialization %s, whose callbacks could not be created, is not recorded: "
                   "%s", ctx.init_id, refused)


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
        self.download: asyncio.Task[None] | None = None  # an overlapped start's download phase

    async def download_alongside(self, spec: PhaseSpec, overlap: WeightsOverlap) -> None:
        """The download phase, returning as soon as its step announces that only weights are
        still arriving (the later phases then run while it goes on), else when it ends."""
        task = asyncio.ensure_future(self._download_phase(spec, overlap))
        announced = asyncio.ensure_future(overlap.announced.wait())
        try:
            await asyncio.wait({task, announced}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            announced.cancel()
            if not task.done() and not overlap.announced.is_set():  # cancelled: stop it too
                task.cancel()
        if task.done():
            task.result()  # its error, if it failed: the sequential start's failure
            return
        overlap.moved_on()
        self.download = task

    async def _download_phase(self, spec: PhaseSpec, overlap: WeightsOverlap) -> None:
        try:
            await self.phase(spec)
        finally:
            overlap.finished()
        if overlap.moved_on_at is not None and overlap.finished_at is not None:
            overlapped_s = max(0.0, overlap.finished_at - overlap.moved_on_at)
            self.recorder.record(
                DownloadOverlapped, overlapped_s=overlapped_s,
                model_dir=overlap.arriving.model_dir if overlap.arriving else None)

    async def download_joined(self) -> None:
        """Wait for an overlapped download phase to end (and raise its error)."""
        if self.download is not None:
            await self.download  # its failure: download_abandoned reports it as the download's
            self.download = None

    async def download_abandoned(self, exc: BaseException,
                                 phase: str | None) -> tuple[BaseException, str | None]:
        """A later phase failed while an overlapped download ran: stop it (or let it end) and
        return the error to report: the download's own, when it failed, is the cause."""
        task, self.download = self.download, None
        if task is None:
            return exc, phase
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            await task
        failure = None if task.cancelled() else task.exception()
        if isinstance(failure, LLMInitError) and not isinstance(exc, INTERRUPTS):
            return failure, Phase.DOWNLOAD.value
        return exc, phase

    async def phase(self, spec: PhaseSpec) -> None:
        phase = spec.phase.value
        rec = self.recorder
        with spans.start(self.dispatcher.tracer, names.SPAN_PHASE_PREFIX + phase,
                         {names.ATTR_PHASE: phase, names.ATTR_INIT_ID: self.ctx.init_id}) as span:
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
            except (LLMInitError, *INTERRUPTS) as exc:
                rec.record(PhaseFailed, phase=phase, duration_s=time.perf_counter() - started,
                           error_type=type(exc).__name__, message=redact_text(str(exc)))
                spans.record_error(span, exc, message=exception_message(exc))
                raise
            rec.record(PhaseCompleted, phase=phase, duration_s=time.perf_counter() - started)


def _builtin_observers(config: LLMConfig, present: Sequence[object]) -> list[EventObserver]:
    """The metrics callback (unless ``enable_metrics`` is off) and the log observer, each
    unless one is already among the callbacks and observers."""
    added: list[EventObserver] = []
    if config.enable_metrics and not any(isinstance(o, MetricsCallback) for o in present):
        added.append(MetricsCallback())
    if not any(isinstance(o, LogObserver) for o in present):
        added.append(LogObserver())
    return added


def _with_warm_start(steps: DefaultSteps, config: LLMConfig) -> DefaultSteps:
    """The steps with the warm-start restore when ``artifact_store`` is set."""
    if config.artifact_store is None:
        return steps
    from llm_init.artifacts.settings import artifact_settings
    from llm_init.steps.warm_start import with_warm_start_steps

    return with_warm_start_steps(steps, artifact_settings(config.artifact_store))


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def _config_summary(config: LLMConfig) -> dict[str, Any]:
    summary = config.to_dict()
    summary["callback_class"] = [callback_name(c) for c in config.callback_classes]
    return summary
