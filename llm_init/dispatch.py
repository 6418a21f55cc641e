"""The one seam that calls user code and default steps: span, snapshot, call, diff, events."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import json
import operator
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Span, Tracer
from opentelemetry.util.types import AttributeValue

from llm_init.binding import BoundHook
from llm_init.context import DICT_FIELDS, RECORDED_FIELDS, NodeInitializationContext
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
from llm_init.recorder import EventRecorder
from llm_init.steps.base import DefaultStep
from llm_init.summary import json_safe
from llm_init.telemetry import names, spans
from llm_init.telemetry.redaction import exception_message

_MISSING: Any = object()
_DEFAULT: Any = object()

_IMMUTABLE = frozenset({type(None), bool, int, float, str})
_CONTAINERS = frozenset({dict, list})
_PLAIN = frozenset({type(None), bool})  # hook results that are certainly not awaitable
# Not errors of the hook but orders to stop: recorded as failures, then re-raised unchanged.
INTERRUPTS = (asyncio.CancelledError, KeyboardInterrupt, SystemExit)


@dataclass(frozen=True, slots=True)
class Change:
    field: str
    key: str | None
    old: Any
    new: Any
    removed: bool = False


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    """Field-level changes; dict fields are compared key by key."""
    changes: list[Change] = []
    for name in RECORDED_FIELDS:
        old, new = before[name], after[name]
        if old == new:
            continue
        if name in DICT_FIELDS and isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(old.keys() | new.keys()):
                o, n = old.get(key, _MISSING), new.get(key, _MISSING)
                if o != n:
                    changes.append(Change(name, key, None if o is _MISSING else o,
                                          None if n is _MISSING else n, removed=n is _MISSING))
        else:
            changes.append(Change(name, None, old, new))
    return changes


class Snapshots:
    """Redacted summaries of the context's recorded fields, taken after each hook or step.

    Summarizing every field after every call would cost more than the call, so a summary is
    reused while the field provably did not change: the same immutable object (``None``, a
    string, an enum member), or a dict or list still equal to its summary when that summary was
    a faithful copy (nothing masked or converted; the comparison runs in C). When no field
    changed, ``take`` returns the previous snapshot itself. The summary after one call is the
    "before" of the next, so whatever changes the context between two calls (a thread a hook
    left running) is still recorded, never lost.
    """

    def __init__(self, ctx: NodeInitializationContext) -> None:
        self.ctx = ctx
        self._get = operator.attrgetter(*RECORDED_FIELDS)
        self._values: tuple[Any, ...] = (_MISSING,) * len(RECORDED_FIELDS)
        self._summaries: list[Any] = [_MISSING] * len(RECORDED_FIELDS)
        self._compare: tuple[int, ...] = ()  # faithful containers: compare with the summary
        self._redo: tuple[int, ...] = ()  # anything else mutable: summarize again
        self.last: dict[str, Any] = {}
        self.last = self.take()

    def take(self) -> dict[str, Any]:
        values = self._get(self.ctx)
        summaries = self._summaries
        if (not self._redo and all(map(operator.is_, values, self._values))
                and all(values[i] == summaries[i] for i in self._compare)):
            return self.last
        compare, redo = [], []
        for i, value in enumerate(values):
            kind = type(value)
            same = self._values[i] is value
            if same and (kind in _IMMUTABLE or isinstance(value, enum.Enum)):
                continue
            if same and i in self._compare and value == summaries[i]:
                compare.append(i)
                continue
            try:
                summaries[i] = json_safe(value, RECORDED_FIELDS[i])
            except Exception as exc:  # a cycle, or a summary method that raised
                raise ContextFieldError(
                    f"ctx.{RECORDED_FIELDS[i]} holds a value that cannot be recorded: "
                    f"{exception_message(exc)}") from exc
            if kind in _CONTAINERS and _same_json(value, summaries[i]):
                compare.append(i)
            elif kind not in _IMMUTABLE and not isinstance(value, enum.Enum):
                redo.append(i)
        self._values, self._compare, self._redo = values, tuple(compare), tuple(redo)
        return dict(zip(RECORDED_FIELDS, summaries, strict=True))


def _same_json(value: Any, summary: Any) -> bool:
    """Whether ``summary`` is an exact copy of ``value`` (same types all the way down)."""
    kind = type(value)
    if kind is not type(summary):
        return False
    if kind is dict:
        return value.keys() == summary.keys() and all(
            _same_json(v, summary[k]) for k, v in value.items())
    if kind is list:
        return len(value) == len(summary) and all(
            _same_json(v, s) for v, s in zip(value, summary, strict=True))
    return kind in _IMMUTABLE and value == summary


class Dispatcher:
    """Runs hooks and steps for one initialization, each through ``_observe``."""

    def __init__(self, ctx: NodeInitializationContext, recorder: EventRecorder,
                 hooks: Mapping[str, tuple[BoundHook, ...]], *, raise_errors: bool,
                 hook_timeout_s: float | None, tracer: Tracer | None = _DEFAULT) -> None:
        self.ctx = ctx
        self.recorder = recorder
        self.hooks = hooks
        self.raise_errors = raise_errors
        self.hook_timeout_s = hook_timeout_s
        # None: no SDK is set up, so no spans are opened at all (see telemetry.spans).
        self.tracer = spans.tracer_for() if tracer is _DEFAULT else tracer
        self.snapshots = Snapshots(ctx)

    async def call_hook(self, phase: str, hook: str) -> str | None:
        """Call every callback's ``hook`` in order; return the first callback that returned
        ``False`` (its default step is then skipped), or ``None``."""
        skipped_by: str | None = None
        for due in self.hooks.get(hook, ()):
            bound = due if due.pick is None else due.pick()
            if bound is None:
                continue
            returned = await self._observe(phase, hook, bound.callback_name, bound)
            if returned is False and hook.startswith("on_pre_") and skipped_by is None:
                skipped_by = bound.callback_name
        return skipped_by

    async def run_step(self, phase: str, step_name: str, step: DefaultStep) -> None:
        await self._observe(phase, step_name, f"step:{step_name}", step)

    async def _observe(self, phase: str, name: str, actor: str,
                       target: BoundHook | DefaultStep) -> Any:
        is_hook = isinstance(target, BoundHook)
        rec, ctx = self.recorder, self.ctx
        changed_by, hook = (actor, name) if is_hook else (name, None)
        ray_hook = target.ray_hook if isinstance(target, BoundHook) else None
        with self._span(name, actor, is_hook, ray_hook) as span:
            if is_hook:
                rec.emit(HookStarted, phase=phase, hook=name, callback=actor, ray_hook=ray_hook)
            else:
                rec.emit(StepStarted, phase=phase, step=name)
            rec.checkpoint()
            ctx._actor = f"{actor}.{name}" if is_hook else f"the {name} step"
            started = time.perf_counter()
            try:
                if isinstance(target, BoundHook):
                    returned = self._call_hook(target)
                    if type(returned) not in _PLAIN and inspect.isawaitable(returned):
                        returned = await returned
                else:
                    await target.run(ctx, self._reporter(phase, name))
                    returned = None
            except (Exception, *INTERRUPTS) as exc:
                duration = time.perf_counter() - started
                ctx._actor = "llm_init"
                # What the hook changed before it failed is recorded too, so replay matches.
                with contextlib.suppress(ContextFieldError):  # its own failure says enough
                    self._record_changes(span, changed_by, hook)
                self._failed(span, phase, name, actor, target, exc, duration)
                return None
            duration = time.perf_counter() - started
            ctx._actor = "llm_init"
            try:
                changed = self._record_changes(span, changed_by, hook)
            except ContextFieldError as exc:  # it left a value that cannot be recorded
                self._failed(span, phase, name, actor, target, exc, duration)
                return None
            if is_hook:
                skipped = returned is False and name.startswith("on_pre_")
                safe_returned = json_safe(returned)
                rec.emit(HookCompleted, phase=phase, hook=name, callback=actor,
                         duration_s=duration, returned=safe_returned,
                         skipped_default=skipped, changed_fields=changed, ray_hook=ray_hook)
                if span.is_recording():
                    _set_outcome(span, changed, safe_returned, skipped)
            else:
                rec.emit(StepCompleted, phase=phase, step=name, duration_s=duration,
                         changed_fields=changed)
                if changed and span.is_recording():
                    span.set_attribute(names.ATTR_CHANGED_FIELDS, changed)
            rec.checkpoint()
            return returned

    def _span(self, name: str, actor: str, is_hook: bool,
              ray_hook: str | None = None) -> contextlib.AbstractContextManager[Span]:
        if self.tracer is None:
            return spans.NO_SPAN
        # Phase and init id are on the parent spans; every attribute costs on this hot path.
        if is_hook:
            attributes: dict[str, AttributeValue] = {names.ATTR_HOOK: name,
                                                     names.ATTR_CALLBACK: actor}
            if ray_hook is not None:
                attributes[names.ATTR_RAY_HOOK] = ray_hook
            return spans.start(self.tracer, names.SPAN_HOOK_PREFIX + name, attributes)
        return spans.start(self.tracer, names.SPAN_STEP_PREFIX + name, {names.ATTR_STEP: name})

    def _call_hook(self, bound: BoundHook) -> Any:
        """Call the hook: its result, or something to await for it (an async hook, or a sync
        hook run in a thread so that its timeout can fire)."""
        timeout = self.hook_timeout_s
        if bound.is_async or timeout is None:
            result = bound.fn(self.ctx)
        else:
            result = _in_daemon_thread(bound.fn, self.ctx)
        if timeout and type(result) not in _PLAIN and inspect.isawaitable(result):
            return asyncio.wait_for(result, timeout)
        return result

    def _record_changes(self, span: Span, changed_by: str, hook: str | None) -> tuple[str, ...]:
        before, after = self.snapshots.last, self.snapshots.take()
        if after is before:
            return ()
        self.snapshots.last = after
        changes = diff(before, after)
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

    def _failed(self, span: Span, phase: str, name: str, actor: str,
                target: BoundHook | DefaultStep, exc: BaseException, duration: float) -> None:
        is_hook = isinstance(target, BoundHook)
        ray_hook = target.ray_hook if isinstance(target, BoundHook) else None
        # A Ray callback keeps its own raise_error_on_callback; llm-init's applies otherwise.
        own = target.raise_errors if isinstance(target, BoundHook) else None
        raise_errors = self.raise_errors if own is None else own
        message = exception_message(exc)
        timed_out = isinstance(exc, asyncio.TimeoutError | TimeoutError) and is_hook
        if timed_out:
            message = f"{actor}.{name} did not return within {self.hook_timeout_s} s"
        spans.record_error(span, exc, message=message)
        interrupted = isinstance(exc, INTERRUPTS)
        if is_hook:
            aborted = raise_errors or interrupted
            if span.is_recording():
                span.set_attribute(names.ATTR_TIMED_OUT, timed_out)
            self.recorder.emit(HookFailed, phase=phase, hook=name, callback=actor,
                               duration_s=duration, error_type=type(exc).__name__,
                               message=message, timed_out=timed_out, aborted=aborted,
                               ray_hook=ray_hook)
            self.recorder.commit()
            if interrupted:
                raise exc
            if not aborted:
                return None
            error_type = HookTimeoutError if timed_out else CallbackError
            raise error_type(f"callback {actor} failed in {name}: {message}",
                             callback=actor, hook=name) from exc
        self.recorder.emit(StepFailed, phase=phase, step=name, duration_s=duration,
                           error_type=type(exc).__name__, message=message)
        self.recorder.commit()
        if interrupted:
            raise exc
        if isinstance(exc, StepError):
            raise exc
        raise StepError(f"the {name} step of phase {phase} failed: {message}",
                        step=name, phase=phase) from exc

    def _reporter(self, phase: str, step: str) -> Callable[..., None]:
        return _Reporter(self.recorder, phase, step)


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
    attributes: dict[str, AttributeValue] = {}
    if changed:
        attributes[names.ATTR_CHANGED_FIELDS] = changed
    if returned is not None:
        attributes[names.ATTR_RETURNED] = _json_text(returned)
    if skipped:
        attributes[names.ATTR_SKIPPED_DEFAULT] = True
    if attributes:
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
