"""The one seam that calls user code and default steps: span, snapshot, call, diff, events."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry.trace import Span, Tracer
from opentelemetry.util.types import AttributeValue

from llm_init.binding import BoundHook
from llm_init.changes import Snapshots
from llm_init.context import NodeInitializationContext
from llm_init.errors import CallbackError, ContextFieldError, HookTimeoutError, StepError
from llm_init.events import (
    ContextChanged,
    Event,
    HookCompleted,
    HookFailed,
    HookStarted,
    StepCompleted,
    StepFailed,
    StepProgressed,
    StepStarted,
)
from llm_init.phases import PRE_HOOKS
from llm_init.recorder import EventRecorder
from llm_init.steps.base import DefaultStep
from llm_init.summary import json_safe
from llm_init.telemetry import names, spans
from llm_init.telemetry.redaction import exception_message

# Not errors of the hook but orders to stop: recorded as failures, then re-raised unchanged.
INTERRUPTS = (asyncio.CancelledError, KeyboardInterrupt, SystemExit)
_CAUGHT = (Exception, *INTERRUPTS)  # what a call's outcome holds instead of raising it


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one call, as a value: what it returned, or what it raised."""

    value: Any = None
    error: BaseException | None = None


class Call(Protocol):
    """One kind of call through the seam (a hook, a step): its span, its events, its policy."""

    actor: str  # who runs, as the context's write errors name it
    changed_by: str  # who ContextChanged events name
    hook: str | None  # the hook ContextChanged events name

    def span(self, tracer: Tracer | None) -> contextlib.AbstractContextManager[Span]: ...

    def started(self, recorder: EventRecorder) -> None: ...

    async def run(self, ctx: NodeInitializationContext) -> Any: ...

    def completed(self, recorder: EventRecorder, span: Span, returned: Any, duration: float,
                  changed: tuple[str, ...]) -> None: ...

    def failed(self, recorder: EventRecorder, span: Span, exc: BaseException,
               duration: float) -> BaseException | None:
        """Record the failure; the error to raise (``exc`` itself: re-raised unchanged), or
        ``None`` to carry on."""


class Dispatcher:
    """Runs hooks and steps for one initialization, each through ``_observe``."""

    def __init__(self, ctx: NodeInitializationContext, recorder: EventRecorder,
                 hooks: Mapping[str, tuple[BoundHook, ...]], *, raise_errors: bool,
                 hook_timeout_s: float | None, tracer: Tracer | None = None) -> None:
        self.ctx = ctx
        self.recorder = recorder
        self.hooks = hooks
        self.raise_errors = raise_errors
        self.hook_timeout_s = hook_timeout_s
        # None: no SDK is set up, so no spans are opened at all (see telemetry.spans).
        self.tracer = tracer
        self.snapshots = Snapshots(ctx)

    async def call_hook(self, phase: str, hook: str) -> str | None:
        """Call every callback's ``hook`` in order; return the first callback that returned
        ``False`` (its default step is then skipped), or ``None``."""
        skipped_by: str | None = None
        for bound in self.hooks.get(hook, ()):
            if bound.when is not None and not bound.when():
                continue
            own = bound.raise_errors
            call = HookCall(phase, bound, self.raise_errors if own is None else own,
                            self.hook_timeout_s)
            returned = await self._observe(call)
            if returned is False and hook in PRE_HOOKS and skipped_by is None:
                skipped_by = bound.callback_name
        return skipped_by

    async def run_step(self, phase: str, step_name: str, step: DefaultStep) -> None:
        await self._observe(StepCall(phase, step_name, step, _Reporter(self.recorder, phase,
                                                                       step_name)))

    async def _observe(self, call: Call) -> Any:
        rec, ctx = self.recorder, self.ctx
        with call.span(self.tracer) as span:
            call.started(rec)
            rec.checkpoint()
            ctx._actor = call.actor
            started = time.perf_counter()
            try:
                result = Result(value=await call.run(ctx))
            except _CAUGHT as exc:
                result = Result(error=exc)
            duration = time.perf_counter() - started
            ctx._actor = "llm_init"
            try:
                changed = self._record_changes(span, call.changed_by, call.hook)
            except ContextFieldError as exc:  # it left a value that cannot be recorded
                # What a failed call changed is recorded too, so replay matches; its own
                # failure, if it had one, says more than this one.
                result, changed = Result(error=result.error or exc), ()
            if result.error is not None:
                error = call.failed(rec, span, result.error, duration)
                rec.commit()
                if error is result.error:
                    raise error
                if error is not None:
                    raise error from result.error
                return None
            call.completed(rec, span, result.value, duration, changed)
            rec.checkpoint()
            return result.value

    def _record_changes(self, span: Span, changed_by: str, hook: str | None) -> tuple[str, ...]:
        changes = self.snapshots.changes()
        if not changes:
            return ()
        recording = span.is_recording()
        for c in changes:
            self.recorder.emit(ContextChanged, field=c.field, key=c.key, old=c.old, new=c.new,
                               changed_by=changed_by, hook=hook, removed=c.removed)
            if recording:
                attrs = {names.ATTR_FIELD: c.field, names.ATTR_OLD: _json_text(c.old),
                         names.ATTR_NEW: _json_text(c.new)}
                if c.key is not None:
                    attrs[names.ATTR_KEY] = c.key
                span.add_event(names.SPAN_EVENT_CONTEXT_CHANGED, attrs)
        return tuple(dict.fromkeys(c.field for c in changes))


class HookCall:
    """One callback's hook: recorded as Hook* events, failing by the callback's error policy."""

    __slots__ = ("actor", "bound", "changed_by", "hook", "phase", "raise_errors", "timeout_s")

    def __init__(self, phase: str, bound: BoundHook, raise_errors: bool,
                 timeout_s: float | None) -> None:
        self.phase, self.bound = phase, bound
        self.raise_errors, self.timeout_s = raise_errors, timeout_s
        self.actor = f"{bound.callback_name}.{bound.hook}"
        self.changed_by = bound.callback_name
        self.hook: str | None = bound.hook

    def span(self, tracer: Tracer | None) -> contextlib.AbstractContextManager[Span]:
        if tracer is None:
            return spans.NO_SPAN
        # Phase and init id are on the parent spans; every attribute costs on this hot path.
        bound = self.bound
        attributes: dict[str, AttributeValue] = {names.ATTR_HOOK: bound.hook,
                                                 names.ATTR_CALLBACK: bound.callback_name}
        if bound.alias is not None:
            attributes[names.ATTR_RAY_HOOK] = bound.alias
        return spans.start(tracer, names.SPAN_HOOK_PREFIX + bound.hook, attributes)

    def started(self, recorder: EventRecorder) -> None:
        bound = self.bound
        recorder.emit(HookStarted, phase=self.phase, hook=bound.hook,
                      callback=bound.callback_name, ray_hook=bound.alias)

    async def run(self, ctx: NodeInitializationContext) -> Any:
        """Call the hook; a sync hook under a timeout runs in a thread so the timeout can fire."""
        bound, timeout = self.bound, self.timeout_s
        if bound.is_async or timeout is None:
            result = bound.fn(ctx)
        else:
            result = _in_daemon_thread(bound.fn, ctx)
        if inspect.isawaitable(result):
            return await (asyncio.wait_for(result, timeout) if timeout else result)
        return result

    def completed(self, recorder: EventRecorder, span: Span, returned: Any, duration: float,
                  changed: tuple[str, ...]) -> None:
        bound = self.bound
        skipped = returned is False and bound.hook in PRE_HOOKS
        safe_returned = json_safe(returned)
        recorder.emit(HookCompleted, phase=self.phase, hook=bound.hook,
                      callback=bound.callback_name, duration_s=duration, returned=safe_returned,
                      skipped_default=skipped, changed_fields=changed, ray_hook=bound.alias)
        if span.is_recording():
            _set_outcome(span, changed, safe_returned, skipped)

    def failed(self, recorder: EventRecorder, span: Span, exc: BaseException,
               duration: float) -> BaseException | None:
        bound = self.bound
        timed_out = isinstance(exc, asyncio.TimeoutError | TimeoutError)
        message = (f"{self.actor} did not return within {self.timeout_s} s" if timed_out
                   else exception_message(exc))
        spans.record_error(span, exc, message=message)
        interrupted = isinstance(exc, INTERRUPTS)
        aborted = self.raise_errors or interrupted
        if span.is_recording():
            span.set_attribute(names.ATTR_TIMED_OUT, timed_out)
        recorder.emit(HookFailed, phase=self.phase, hook=bound.hook, callback=bound.callback_name,
                      duration_s=duration, error_type=type(exc).__name__, message=message,
                      timed_out=timed_out, aborted=aborted, ray_hook=bound.alias)
        if interrupted:
            return exc
        if not aborted:
            return None
        error_type = HookTimeoutError if timed_out else CallbackError
        return error_type(f"callback {bound.callback_name} failed in {bound.hook}: {message}",
                          callback=bound.callback_name, hook=bound.hook)


class StepCall:
    """A default step: recorded as Step* events; its failure always stops the initialization."""

    __slots__ = ("actor", "changed_by", "hook", "name", "phase", "report", "step")

    def __init__(self, phase: str, name: str, step: DefaultStep, report: _Reporter) -> None:
        self.phase, self.name, self.step, self.report = phase, name, step, report
        self.actor, self.changed_by = f"the {name} step", name
        self.hook: str | None = None

    def span(self, tracer: Tracer | None) -> contextlib.AbstractContextManager[Span]:
        return spans.start(tracer, names.SPAN_STEP_PREFIX + self.name, {names.ATTR_STEP: self.name})

    def started(self, recorder: EventRecorder) -> None:
        recorder.emit(StepStarted, phase=self.phase, step=self.name)

    async def run(self, ctx: NodeInitializationContext) -> Any:
        await self.step.run(ctx, self.report)

    def completed(self, recorder: EventRecorder, span: Span, returned: Any, duration: float,
                  changed: tuple[str, ...]) -> None:
        recorder.emit(StepCompleted, phase=self.phase, step=self.name, duration_s=duration,
                      changed_fields=changed)
        if changed and span.is_recording():
            span.set_attribute(names.ATTR_CHANGED_FIELDS, changed)

    def failed(self, recorder: EventRecorder, span: Span, exc: BaseException,
               duration: float) -> BaseException | None:
        message = exception_message(exc)
        spans.record_error(span, exc, message=message)
        recorder.emit(StepFailed, phase=self.phase, step=self.name, duration_s=duration,
                      error_type=type(exc).__name__, message=message)
        if isinstance(exc, (*INTERRUPTS, StepError)):
            return exc
        return StepError(f"the {self.name} step of phase {self.phase} failed: {message}",
                         step=self.name, phase=self.phase)


class _Reporter:
    """A step's ``report(**details)`` (a ``StepProgressed`` event), and ``report.record(type,
    **fields)`` for a typed event of the step's own (a warm start's ``ArtifactRestored``)."""

    __slots__ = ("phase", "recorder", "step")

    def __init__(self, recorder: EventRecorder, phase: str, step: str) -> None:
        self.recorder = recorder
        self.phase = phase
        self.step = step

    def __call__(self, **details: Any) -> None:
        self.recorder.emit(StepProgressed, phase=self.phase, step=self.step,
                           details=json_safe(details))
        self.recorder.checkpoint()

    def record(self, event_type: type[Event], /, **fields: Any) -> None:
        self.recorder.emit(event_type, **fields)
        self.recorder.checkpoint()


def _set_outcome(span: Span, changed: tuple[str, ...], returned: Any, skipped: bool) -> None:
    """A hook span's outcome attributes, each only when it differs from the common case (no
    change, ``None`` returned, default step not skipped): every attribute costs the span and
    its export more than a no-op hook call, and most hook calls are that common case."""
    if not changed and returned is None and not skipped:
        return
    attributes: dict[str, AttributeValue] = {}
    if changed:
        attributes[names.ATTR_CHANGED_FIELDS] = changed
    if returned is not None:
        attributes[names.ATTR_RETURNED] = _json_text(returned)
    if skipped:
        attributes[names.ATTR_SKIPPED_DEFAULT] = True
    span.set_attributes(attributes)


def _json_text(value: Any) -> str:
    """``value`` as JSON for a span attribute; one JSON cannot hold (an int of more than 4,300
    digits) is named, not raised: the event log reports it (``EventRejected``)."""
    try:
        return json.dumps(value)
    except (ValueError, TypeError, RecursionError):
        return json.dumps(f"<{type(value).__name__} that JSON cannot hold>")


def _in_daemon_thread(fn: Callable[[Any], Any], arg: Any) -> asyncio.Future[Any]:
    """Run a sync hook in its own daemon thread: it can't be interrupted, so the timeout must
    fire while it hangs, and a hung thread must not keep the process (or ``asyncio.run``) alive,
    as a default-executor thread would."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)

    def target() -> None:
        try:
            outcome = (True, fn(arg))
        except BaseException as exc:
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop may be gone after a timeout
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=target, name="llm-init-hook", daemon=True).start()
    return future
