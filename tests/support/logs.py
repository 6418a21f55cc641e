"""Synthetic initialization logs with chosen model, outcome, start time, labels and durations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from llm_init import (
    PHASES,
    ContextChanged,
    Event,
    HookCompleted,
    HookStarted,
    InitializationCompleted,
    InitializationFailed,
    InitializationStarted,
    PhaseCompleted,
    PhaseFailed,
    PhaseStarted,
)
from llm_init.stores import StoredEvent, encode

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
PHASE_NAMES = [spec.phase.value for spec in PHASES]


def synthetic_log(init_id: str, *, model_id: str = "m", started_at: datetime = T0,
                  outcome: str = "completed", seconds: float = 1.0,
                  labels: dict[str, str] | None = None, host: str = "host-a",
                  hook_s: float = 0.01, context: dict[str, Any] | None = None) -> list[Event]:
    """A log of the five phases, one hook each, ``seconds`` per phase; ``failed`` fails in
    engine_init, ``running`` stops inside download."""
    events: list[Event] = []
    clock = started_at

    def add(cls: type[Event], advance: float = 0.0, **fields: Any) -> None:
        nonlocal clock
        clock += timedelta(seconds=advance)
        events.append(cls(init_id=init_id, sequence=len(events) + 1, timestamp=clock,
                          **fields))

    add(InitializationStarted, model_id=model_id, config={"model_id": model_id},
        context=context or {"custom_data": {}}, callbacks=("cb",), host=host, pid=1,
        labels=dict(labels or {}))
    total = 0.0
    for phase in PHASE_NAMES:
        add(PhaseStarted, phase=phase)
        if outcome == "running" and phase == "download":
            return events
        add(HookStarted, phase=phase, hook=f"on_pre_{phase}", callback="cb")
        add(HookCompleted, hook_s, phase=phase, hook=f"on_pre_{phase}", callback="cb",
            duration_s=hook_s, returned=None, skipped_default=False,
            changed_fields=("custom_data",))
        add(ContextChanged, field="custom_data", key=phase, old=None, new=seconds,
            changed_by="cb", hook=f"on_pre_{phase}")
        if outcome == "failed" and phase == "engine_init":
            add(PhaseFailed, seconds, phase=phase, duration_s=seconds, error_type="OOM",
                message="out of memory")
            add(InitializationFailed, duration_s=total + seconds, phase=phase,
                error_type="OOM", message="out of memory")
            return events
        add(PhaseCompleted, seconds - hook_s, phase=phase, duration_s=seconds)
        total += seconds
    add(InitializationCompleted, duration_s=total)
    return events


def records(events: list[Event]) -> list[StoredEvent]:
    return [encode(e) for e in events]
