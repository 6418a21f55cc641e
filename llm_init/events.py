"""The typed events of an initialization's log: frozen, slotted, past-tense, versioned."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

from llm_init.summary import JsonValue


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Fields every event carries: which init, where in its log, when, and under which span."""

    TYPE: ClassVar[str] = "Event"
    SCHEMA_VERSION: ClassVar[int] = 1

    init_id: str
    sequence: int
    timestamp: datetime
    trace_id: str | None = None
    span_id: str | None = None
    node_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InitializationStarted(Event):
    TYPE: ClassVar[str] = "InitializationStarted"
    model_id: str
    config: dict[str, JsonValue]
    context: dict[str, JsonValue]
    callbacks: tuple[str, ...]
    host: str
    pid: int
    labels: dict[str, str]
    # Seconds between the ``HeartbeatRecorded`` events this process promises while it runs;
    # ``None`` (heartbeats off, or a log written before them): readers never judge it
    # abandoned by time.
    heartbeat_interval_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaLaunched(Event):
    """What came before the initialization in a Serve replica, so start-up time that llm-init
    did not spend is still accounted for: ``scheduling_s`` from the application's build (the
    deploy request) to the replica's process start, and ``boot_s`` from the process start
    (worker start, imports, the replica's constructor) to the initialization. Times are Unix
    seconds; a segment is None where its start is unknown."""

    TYPE: ClassVar[str] = "ReplicaLaunched"
    app_built_at: float | None
    process_started_at: float | None
    scheduling_s: float | None
    boot_s: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplicaReady(Event):
    """A Serve replica passed its first health check, ``since_initialization_s`` after its
    initialization completed: the time Serve spent around the replica's constructor after the
    engine was up (Ray Serve LLM's own bookkeeping, building the app it serves). Appended after
    ``InitializationCompleted``, so it never changes the initialization's outcome."""

    TYPE: ClassVar[str] = "ReplicaReady"
    since_initialization_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class InitializationCompleted(Event):
    TYPE: ClassVar[str] = "InitializationCompleted"
    duration_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class InitializationFailed(Event):
    TYPE: ClassVar[str] = "InitializationFailed"
    duration_s: float
    phase: str | None
    error_type: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HeartbeatRecorded(Event):
    """The process running the initialization was alive; recorded every ``interval_s`` from
    its own thread (so a blocked event loop still beats). Readers judge an unfinished init
    abandoned once its last beat is older than ``liveness.ABANDON_AFTER_BEATS`` intervals."""

    TYPE: ClassVar[str] = "HeartbeatRecorded"
    interval_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class InitializationAbandoned(Event):
    """The process that ran this initialization is gone (``pid`` on ``host`` no longer runs,
    or runs another program), found by a later llm-init process on the same host at its
    start-up and recorded there, on the dead one's log: its end, since it could not say so
    itself. ``silent_s``: seconds since its last heartbeat (or event) when it was closed."""

    TYPE: ClassVar[str] = "InitializationAbandoned"
    reason: str
    phase: str | None
    host: str
    pid: int
    closed_by_pid: int
    silent_s: float | None = None
    model_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseStarted(Event):
    TYPE: ClassVar[str] = "PhaseStarted"
    phase: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseCompleted(Event):
    TYPE: ClassVar[str] = "PhaseCompleted"
    phase: str
    duration_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseSkipped(Event):
    """The phase's default step did not run because a pre-hook returned ``False``."""

    TYPE: ClassVar[str] = "PhaseSkipped"
    phase: str
    step: str
    skipped_by: str
    hook: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PhaseFailed(Event):
    TYPE: ClassVar[str] = "PhaseFailed"
    phase: str
    duration_s: float
    error_type: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class HookStarted(Event):
    TYPE: ClassVar[str] = "HookStarted"
    phase: str
    hook: str
    callback: str
    ray_hook: str | None = None  # the Ray Serve LLM hook this call runs (a Ray callback's)


@dataclass(frozen=True, slots=True, kw_only=True)
class HookCompleted(Event):
    TYPE: ClassVar[str] = "HookCompleted"
    phase: str
    hook: str
    callback: str
    duration_s: float
    returned: JsonValue
    skipped_default: bool
    changed_fields: tuple[str, ...]
    ray_hook: str | None = None  # the Ray Serve LLM hook this call ran (a Ray callback's)


@dataclass(frozen=True, slots=True, kw_only=True)
class HookFailed(Event):
    TYPE: ClassVar[str] = "HookFailed"
    phase: str
    hook: str
    callback: str
    duration_s: float
    error_type: str
    message: str
    timed_out: bool
    aborted: bool
    ray_hook: str | None = None  # the Ray Serve LLM hook this call ran (a Ray callback's)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepStarted(Event):
    TYPE: ClassVar[str] = "StepStarted"
    phase: str
    step: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StepProgressed(Event):
    """Progress inside a running step: bytes downloaded, an engine sub-phase finished."""

    TYPE: ClassVar[str] = "StepProgressed"
    phase: str
    step: str
    details: dict[str, JsonValue]


@dataclass(frozen=True, slots=True, kw_only=True)
class StepCompleted(Event):
    TYPE: ClassVar[str] = "StepCompleted"
    phase: str
    step: str
    duration_s: float
    changed_fields: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StepFailed(Event):
    TYPE: ClassVar[str] = "StepFailed"
    phase: str
    step: str
    duration_s: float
    error_type: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ContextChanged(Event):
    """One field (or one key of a dict field) changed by a hook or a step."""

    TYPE: ClassVar[str] = "ContextChanged"
    field: str
    key: str | None
    old: JsonValue
    new: JsonValue
    changed_by: str
    hook: str | None
    removed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRejected(Event):
    """The event store refused the event that had this sequence number, for good; this takes
    its place, so the log has no gap and says what was lost: the event's type, the phase, hook,
    callback, step and field it concerned (where known) and the store's or encoder's reason."""

    TYPE: ClassVar[str] = "EventRejected"
    rejected_type: str
    error_type: str
    message: str
    phase: str | None = None
    hook: str | None = None
    callback: str | None = None
    step: str | None = None
    field: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactRestored(Event):
    """A warm-start artifact was fetched, verified and unpacked on ``node`` before the engine
    started: ``bytes`` unpacked in ``seconds``. ``parts`` are what went into ``key``.
    ``signed_by``: the id of the trusted key whose signature verified (``None``: unchecked)."""

    TYPE: ClassVar[str] = "ArtifactRestored"
    key: str
    store: str
    bytes: int
    files: int
    seconds: float
    node: str | None = None
    path: str | None = None
    parts: dict[str, str] = field(default_factory=dict)
    signed_by: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactMissed(Event):
    """No usable warm-start artifact on ``node``; the engine compiles as usual. ``reason``:
    ``no_match``, ``corrupt``, ``version_mismatch``, ``unreachable``, ``timeout``,
    ``local_error``, ``denied``, ``too_large`` or ``untrusted`` (unsigned, or not signed by a
    trusted key); ``parts`` explain the ``key`` that was looked for. ``nearest`` is the store's
    closest artifact of the same model, and ``differs`` its parts that differ, as
    ``[theirs, here]`` (a version mismatch when only software or device parts differ)."""

    TYPE: ClassVar[str] = "ArtifactMissed"
    key: str
    store: str
    reason: str
    message: str = ""
    seconds: float = 0.0
    node: str | None = None
    parts: dict[str, str] = field(default_factory=dict)
    nearest: str | None = None
    differs: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactPublished(Event):
    """What vLLM cached for this engine was published as ``key``: ``bytes`` uploaded in
    ``seconds``, after the replica was ready; ``signed_by``: the id of the key that signed it."""

    TYPE: ClassVar[str] = "ArtifactPublished"
    key: str
    store: str
    bytes: int
    files: int
    seconds: float
    signed_by: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactPublishSkipped(Event):
    """Nothing was published for ``key``. ``reason``: ``exists``, ``too_large``, ``empty``,
    ``vetoed`` (a callback said no), ``unsigned`` (readers require signatures and this
    publisher holds no trusted key) or ``failed`` (the store refused; ``message`` says why)."""

    TYPE: ClassVar[str] = "ArtifactPublishSkipped"
    key: str
    store: str
    reason: str
    message: str = ""
    bytes: int = 0
    seconds: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactUseObserved(Event):
    """What vLLM did with its compile cache on ``node``, from its own log lines, once the engine
    had started: ``used`` when the AOT artifact loaded or no graph had to be compiled.
    ``restored``: this initialization restored ``key`` there first (a restored artifact that
    is not ``used`` is a miss in disguise). ``aot``: ``loaded``, ``failed`` (``aot_reason``) or
    ``absent``; ``graphs_loaded``/``graphs_compiled``: compile ranges from the cache or
    compiled; ``compiled``: vLLM compiled the model and saved a new AOT artifact;
    ``model_info_cached``: ``None`` when vLLM did not say."""

    TYPE: ClassVar[str] = "ArtifactUseObserved"
    key: str
    used: bool
    restored: bool = False
    aot: str = "absent"
    aot_reason: str | None = None
    graphs_loaded: int = 0
    graphs_compiled: int = 0
    compiled: bool = False
    model_info_cached: bool | None = None
    cache_disabled: bool = False
    node: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightsRouteChosen(Event):
    """How the model's weights reach the engine under a streaming load format, decided by the
    download step before any node fetched: ``route`` ``streamed`` (vLLM reads them from the
    bucket; no node downloads them) or ``downloaded`` (the context asked a node for them), with
    the ``reason`` in words, the ``load_format``, the bucket ``source`` and each node's
    download mode (``modes``: node id to ``NONE``, ``TOKENIZER_ONLY`` ...)."""

    TYPE: ClassVar[str] = "WeightsRouteChosen"
    route: str
    reason: str
    load_format: str | None = None
    source: str = ""
    modes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class WeightsLoaded(Event):
    """A worker of the engine on ``node`` loaded the model's weights (the ``weight_loading``
    sub-phase): ``bytes`` of ``files`` weight files in ``seconds``, ``bytes_per_s``. ``worker``:
    the process that loaded them (``EngineCore``, ``VllmWorker-0``...). ``load_format``: vLLM's
    (``auto``, ``runai_streamer``...). ``source``: where ``seconds`` came from, ``vllm_log``
    ("Loading weights took") or ``streamer_log`` (the RunAI Model Streamer's overall time);
    ``bytes`` are the sizes of the files vLLM loaded (local files, or objects in the bucket).
    ``seconds``/``bytes_per_s`` are ``None`` when no line told the time. ``ended_at``: when
    the transfer ended (Unix time of that line)."""

    TYPE: ClassVar[str] = "WeightsLoaded"
    bytes: int = 0
    files: int = 0
    seconds: float | None = None
    bytes_per_s: float | None = None
    load_format: str = "auto"
    source: str = "vllm_log"
    worker: str | None = None
    node: str | None = None
    ended_at: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadOverlapped(Event):
    """An overlapped start's download phase ended (``overlap_weights``): for
    ``overlapped_s`` seconds before its end the placement group and engine phases ran beside
    it, the seconds the overlap saved over the sequential start. ``model_dir``: the local
    model directory the engine loaded from as its weight files arrived."""

    TYPE: ClassVar[str] = "DownloadOverlapped"
    overlapped_s: float = 0.0
    model_dir: str | None = None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (
        InitializationStarted, ReplicaLaunched, ReplicaReady, InitializationCompleted,
        InitializationFailed, HeartbeatRecorded, InitializationAbandoned,
        PhaseStarted, PhaseCompleted, PhaseSkipped, PhaseFailed,
        HookStarted, HookCompleted, HookFailed,
        StepStarted, StepProgressed, StepCompleted, StepFailed,
        ContextChanged, EventRejected,
        ArtifactRestored, ArtifactMissed, ArtifactPublished, ArtifactPublishSkipped,
        ArtifactUseObserved, WeightsRouteChosen, WeightsLoaded, DownloadOverlapped,
    )
}

TERMINAL_TYPES = (InitializationCompleted, InitializationFailed, InitializationAbandoned)


def header_fields() -> frozenset[str]:
    return frozenset(Event.__dataclass_fields__)


def payload_names(cls: type[Event]) -> tuple[str, ...]:
    """The names of the event-specific fields of an event type, in declaration order."""
    names = _PAYLOAD_FIELDS.get(cls)
    if names is None:
        names = _PAYLOAD_FIELDS[cls] = tuple(
            n for n in cls.__dataclass_fields__ if n not in _HEADER)
    return names


def payload_of(event: Event) -> dict[str, Any]:
    """The event-specific fields, as plain values."""
    return {name: getattr(event, name) for name in payload_names(type(event))}


_HEADER = header_fields()
_PAYLOAD_FIELDS: dict[type[Event], tuple[str, ...]] = {}
