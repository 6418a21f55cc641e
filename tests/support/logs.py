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


def weights_log(init_id: str, *, model_id: str = "m", started_at: datetime = T0,
                fetched: int = 3_000_000, fetch_s: float = 2.0, loaded: int = 4_000_000_000,
                load_s: float = 2.0, load_format: str = "auto") -> list[Event]:
    """A completed log whose download fetched ``fetched`` bytes on node ``a`` in ``fetch_s``
    (from 0 s to 2 s), and whose engine step (from 2 s to 10 s) had its ``EngineCore`` load
    ``loaded`` bytes in ``load_s``, ending 5 s after the start."""
    from llm_init.events import StepCompleted, StepProgressed, StepStarted, WeightsLoaded

    events: list[Event] = []

    def add(cls: type[Event], at: float, **fields: Any) -> None:
        events.append(cls(init_id=init_id, sequence=len(events) + 1,
                          timestamp=started_at + timedelta(seconds=at), **fields))

    add(InitializationStarted, 0.0, model_id=model_id, config={"model_id": model_id},
        context={}, callbacks=(), host="host-a", pid=1, labels={})
    add(PhaseStarted, 0.0, phase="download")
    add(StepStarted, 0.0, phase="download", step="download")
    add(StepProgressed, 1.0, phase="download", step="download",
        details={"node_id": "a", "stage": "fetching", "bytes_delta": fetched // 3})
    add(StepProgressed, 2.0, phase="download", step="download",
        details={"node_id": "a", "stage": "node_completed",
                 "bytes_delta": fetched - fetched // 3, "seconds": fetch_s,
                 "bytes_done": fetched, "bytes_total": fetched, "files_done": 2,
                 "files_total": 2, "throughput_bytes_per_s": fetched / fetch_s})
    add(StepCompleted, 2.0, phase="download", step="download", duration_s=2.0,
        changed_fields=("download_result",))
    add(PhaseCompleted, 2.0, phase="download", duration_s=2.0)
    add(PhaseStarted, 2.0, phase="engine_init")
    add(StepStarted, 2.0, phase="engine_init", step="engine")
    ended = (started_at + timedelta(seconds=5.0)).timestamp()
    add(WeightsLoaded, 9.0, bytes=loaded, files=2, seconds=load_s,
        bytes_per_s=loaded / load_s, load_format=load_format, source="vllm_log",
        worker="EngineCore", node="a", ended_at=ended)
    add(StepCompleted, 10.0, phase="engine_init", step="engine", duration_s=8.0,
        changed_fields=("engine",))
    add(PhaseCompleted, 10.0, phase="engine_init", duration_s=8.0)
    add(InitializationCompleted, 10.0, duration_s=10.0)
    return events


# The event trail of a plain run with a callback implementing every hook: phases, hooks, steps and
# the context field each step sets, in order.
PLAIN_RUN = [
    "InitializationStarted",
    "PhaseStarted:pre_initialization",
    "HookStarted:on_pre_initialization", "HookCompleted:on_pre_initialization",
    "PhaseCompleted:pre_initialization",
    "PhaseStarted:download",
    "HookStarted:on_pre_download", "HookCompleted:on_pre_download",
    "StepStarted:download", "ContextChanged:download_result", "StepCompleted:download",
    "HookStarted:on_post_download", "HookCompleted:on_post_download",
    "PhaseCompleted:download",
    "PhaseStarted:placement_group",
    "HookStarted:on_pre_placement_group", "HookCompleted:on_pre_placement_group",
    "StepStarted:placement_group", "ContextChanged:placement_group",
    "StepCompleted:placement_group",
    "HookStarted:on_post_placement_group", "HookCompleted:on_post_placement_group",
    "PhaseCompleted:placement_group",
    "PhaseStarted:engine_init",
    "HookStarted:on_pre_engine_init", "HookCompleted:on_pre_engine_init",
    "StepStarted:engine", "ContextChanged:engine", "StepCompleted:engine",
    "HookStarted:on_post_engine_init", "HookCompleted:on_post_engine_init",
    "PhaseCompleted:engine_init",
    "PhaseStarted:post_initialization",
    "HookStarted:on_post_initialization", "HookCompleted:on_post_initialization",
    "PhaseCompleted:post_initialization",
    "InitializationCompleted",
]
