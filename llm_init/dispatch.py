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
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from llm_init.callbacks import BoundHook
from llm_init.context import DICT_FIELDS, RECORDED_FIELDS, NodeInitializationContext
from llm_init.errors import CallbackError, HookTimeoutError, StepError
from llm_init.events import (
    ContextChanged,
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
from llm_init.telemetry import names

_tracer = trace.get_tracer(names.INSTRUMENTATION_NAME)
_MISSING: Any = object()


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


class Dispatcher:
    """Runs hooks and steps for one initialization, each through ``_observe``."""

    def __init__(self, ctx: NodeInitializationContext, recorder: EventRecorder,
                 hooks: Mapping[str, tuple[BoundHook, ...]], *, raise_errors: bool,
                 hook_timeout_s: float | None) -> None:
        self.ctx = ctx
        self.recorder = recorder
        self.hooks = hooks
        self.raise_errors = raise_errors
        self.hook_timeout_s = hook_timeout_s

    async def call_hook(self, phase: str, hook: str) -> str | None:
        """Call every callback's ``hook`` in order; return the first callback that returned
        ``False`` (its default step is then skipped), or ``None``."""
        skipped_by: str | None = None
        for bound in self.hooks.get(hook, ()):
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
        span_name = (names.SPAN_HOOK_PREFIX if is_hook else names.SPAN_STEP_PREFIX) + name
        attrs = {names.ATTR_PHASE: phase, names.ATTR_INIT_ID: ctx.init_id}
        attrs[names.ATTR_HOOK if is_hook else names.ATTR_STEP] = name
        if is_hook:
            attrs[names.ATTR_CALLBACK] = actor
        with _tracer.start_as_current_span(span_name, attributes=attrs,
                                           record_exception=False,
                                           set_status_on_exception=False) as span:
            if is_hook:
                rec.record(HookStarted, phase=phase, hook=name, callback=actor)
            else:
                rec.record(StepStarted, phase=phase, step=name)
            before = ctx.snapshot()
            ctx._actor = f"{actor}.{name}" if is_hook else f"the {name} step"
            started = time.perf_counter()
            try:
                if isinstance(target, BoundHook):
                    returned = await self._call_hook(target)
                else:
                    await target.run(ctx, self._reporter(phase, name))
                    returned = None
            except (Exception, asyncio.CancelledError) as exc:
                duration = time.perf_counter() - started
                ctx._actor = "llm_init"
                # What the hook changed before it failed is recorded too, so replay matches.
                self._record_changes(span, before, actor if is_hook else name,
                                     name if is_hook else None)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                self._failed(phase, name, actor, is_hook, exc, duration)
                return None
            duration = time.perf_counter() - started
            ctx._actor = "llm_init"
            changed = self._record_changes(span, before, actor if is_hook else name,
                                           name if is_hook else None)
            span.set_attribute(names.ATTR_CHANGED_FIELDS, list(changed))
            if is_hook:
                skipped = returned is False and name.startswith("on_pre_")
                span.set_attribute(names.ATTR_RETURNED, json.dumps(json_safe(returned)))
                span.set_attribute(names.ATTR_SKIPPED_DEFAULT, skipped)
                rec.emit(HookCompleted, phase=phase, hook=name, callback=actor,
                         duration_s=duration, returned=json_safe(returned),
                         skipped_default=skipped, changed_fields=changed)
            else:
                rec.emit(StepCompleted, phase=phase, step=name, duration_s=duration,
                         changed_fields=changed)
            rec.commit()
            return returned

    async def _call_hook(self, bound: BoundHook) -> Any:
        timeout = self.hook_timeout_s
        if bound.is_async or timeout is None:
            result = bound.fn(self.ctx)
        else:
            result = _in_daemon_thread(bound.fn, self.ctx)
        if inspect.isawaitable(result):
            result = await (asyncio.wait_for(result, timeout) if timeout else result)
        return result

    def _record_changes(self, span: Span, before: Mapping[str, Any], changed_by: str,
                        hook: str | None) -> tuple[str, ...]:
        changes = diff(before, self.ctx.snapshot())
        for c in changes:
            self.recorder.emit(ContextChanged, field=c.field, key=c.key, old=c.old, new=c.new,
                               changed_by=changed_by, hook=hook, removed=c.removed)
            span.add_event(names.SPAN_EVENT_CONTEXT_CHANGED, {
                names.ATTR_FIELD: c.field, names.ATTR_KEY: c.key or "",
                names.ATTR_OLD: json.dumps(c.old), names.ATTR_NEW: json.dumps(c.new),
            })
        return tuple(dict.fromkeys(c.field for c in changes))

    def _failed(self, phase: str, name: str, actor: str, is_hook: bool, exc: BaseException,
                duration: float) -> None:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, asyncio.TimeoutError | TimeoutError) and is_hook:
            message = f"{actor}.{name} did not return within {self.hook_timeout_s} s"
        timed_out = isinstance(exc, asyncio.TimeoutError | TimeoutError) and is_hook
        cancelled = isinstance(exc, asyncio.CancelledError)
        if is_hook:
            aborted = self.raise_errors or cancelled
            self.recorder.emit(HookFailed, phase=phase, hook=name, callback=actor,
                               duration_s=duration, error_type=type(exc).__name__,
                               message=message, timed_out=timed_out, aborted=aborted)
            self.recorder.commit()
            if cancelled:
                raise exc
            if not aborted:
                return None
            error_type = HookTimeoutError if timed_out else CallbackError
            raise error_type(f"callback {actor} failed in {name}: {message}",
                             callback=actor, hook=name) from exc
        self.recorder.emit(StepFailed, phase=phase, step=name, duration_s=duration,
                           error_type=type(exc).__name__, message=message)
        self.recorder.commit()
        if cancelled:
            raise exc
        if isinstance(exc, StepError):
            raise exc
        raise StepError(f"the {name} step of phase {phase} failed: {message}",
                        step=name, phase=phase) from exc

    def _reporter(self, phase: str, step: str) -> Callable[..., None]:
        def report(**details: Any) -> None:
            self.recorder.record(StepProgressed, phase=phase, step=step,
                                 details=json_safe(details))
        return report


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
