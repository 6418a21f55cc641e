"""Projections of the event log: the context state, the timeline, and one-line summaries."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeGuard

from llm_init import liveness
from llm_init.errors import UnknownInitializationError
from llm_init.events import (
    ArtifactMissed,
    ArtifactPublished,
    ArtifactPublishSkipped,
    ArtifactRestored,
    ArtifactUseObserved,
    ContextChanged,
    DownloadOverlapped,
    Event,
    HeartbeatRecorded,
    HookCompleted,
    HookFailed,
    HookStarted,
    InitializationAbandoned,
    InitializationCompleted,
    InitializationFailed,
    InitializationStarted,
    PhaseCompleted,
    PhaseFailed,
    PhaseSkipped,
    PhaseStarted,
    ReplicaLaunched,
    ReplicaReady,
    StepCompleted,
    StepFailed,
    StepProgressed,
    StepStarted,
    WeightsLoaded,
    WeightsRouteChosen,
)
from llm_init.stores.base import DecodingStore, EventStore, InitQuery, PrefixSearchStore
from llm_init.stores.codec import decode


@dataclass(slots=True)
class TimelineEntry:
    """One bar of the waterfall: a phase, a default step or a hook call."""

    kind: str  # "phase" | "step" | "hook" | "weights" (how they reach the engine, and why)
    phase: str
    name: str
    actor: str | None
    started_at: datetime
    duration_s: float | None = None
    status: str = "running"  # running | completed | skipped | failed | abandoned
    detail: str = ""
    trace_id: str | None = None
    span_id: str | None = None


@dataclass(slots=True)
class ReplayedInitialization:
    """What the log says about one initialization, after any prefix of its events."""

    init_id: str
    model_id: str
    started_at: datetime | None
    state: dict[str, Any]
    outcome: str  # running | completed | failed | abandoned
    duration_s: float | None
    current_phase: str | None
    current_activity: str | None
    timeline: list[TimelineEntry]
    error: str | None = None
    last_sequence: int = 0
    trace_id: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)
    # Per node (a download's ``node_id``): its latest progress details, and ``at``, the time
    # of that report.
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    scheduling_s: float | None = None  # Serve replicas: deploy request -> process start
    boot_s: float | None = None  # process start -> initialization
    ready_s: float | None = None  # initialization -> Serve's first health check passed
    # Warm starts: this node's restore (result, reason, key, bytes, seconds) and the publish.
    warm_start: dict[str, Any] = field(default_factory=dict)
    heartbeat_interval_s: float | None = None  # as declared or last beaten; None: no heartbeat
    last_beat_at: datetime | None = None  # its start or its last HeartbeatRecorded
    last_event_at: datetime | None = None
    host: str = ""  # where it started, as InitializationStarted recorded it
    # The engine's weight transfers (``WeightsLoaded``), one per worker: node, worker, bytes,
    # files, seconds, bytes_per_s, load_format, source, ended_at.
    weights: list[dict[str, Any]] = field(default_factory=list)
    # An overlapped start: seconds the download ran beside the later phases (DownloadOverlapped)
    overlapped_s: float | None = None

    @property
    def alive_until(self) -> datetime | None:
        """When an unfinished init with no further heartbeat counts as abandoned (``None``:
        never by time); see ``llm_init.liveness``."""
        if self.last_beat_at is None:
            return None
        return liveness.alive_until(self.last_beat_at, self.heartbeat_interval_s)

    @property
    def startup_s(self) -> float | None:
        """The replica's whole start-up as recorded: launch segments, the initialization, and
        the wait for Serve's readiness after it."""
        if self.duration_s is None:
            return None
        return ((self.scheduling_s or 0.0) + (self.boot_s or 0.0) + self.duration_s
                + (self.ready_s or 0.0))

    @property
    def phase_durations(self) -> dict[str, float]:
        return {e.phase: e.duration_s for e in self.timeline
                if e.kind == "phase" and e.duration_s is not None}


def read_events(store: EventStore, init_id: str) -> list[Event]:
    """The decoded log of one initialization; raises if there is none."""
    if _decodes(store):
        events = store.read_decoded(init_id)
    else:
        events = [decode(r) for r in store.read(init_id)]
    if not events:
        raise UnknownInitializationError(f"no initialization {init_id!r} in the event store")
    return events


def _decodes(store: EventStore) -> TypeGuard[DecodingStore]:
    """Whether the store decodes its own rows; asked once per store class, since a protocol
    ``isinstance`` costs more than decoding an event."""
    found = _DECODING.get(type(store))
    if found is None:
        found = _DECODING[type(store)] = isinstance(store, DecodingStore)
    return found


_DECODING: dict[type, bool] = {}


def replay(events: Iterable[Event], upto: int | None = None, *,
           now: datetime | None = None) -> ReplayedInitialization:
    """Fold the events (up to and including sequence ``upto``) into state and timeline.

    A whole log that is unfinished and whose heartbeat is older than its bound at ``now``
    (default: the current time) comes out ``abandoned`` (see ``llm_init.liveness``); a log
    cut short by ``upto`` is the state after that event, judged at none."""
    result: ReplayedInitialization | None = None
    open_items: dict[tuple[str, str, str | None], TimelineEntry] = {}
    whole = True
    for event in events:
        if upto is not None and event.sequence > upto:
            whole = False
            break
        if isinstance(event, InitializationStarted):
            result = ReplayedInitialization(
                init_id=event.init_id, model_id=event.model_id, started_at=event.timestamp,
                state=_copy(event.context), outcome="running", duration_s=None,
                current_phase=None, current_activity=None, timeline=[],
                trace_id=event.trace_id, labels=dict(event.labels),
                heartbeat_interval_s=event.heartbeat_interval_s, last_beat_at=event.timestamp,
                host=event.host,
            )
        elif result is None:
            raise UnknownInitializationError(
                f"the log of {event.init_id!r} does not start with InitializationStarted"
            )
        else:
            (_HANDLERS.get(type(event)) or _handler(type(event)))(result, open_items, event)
        if result is not None:
            result.last_sequence = event.sequence
            result.last_event_at = event.timestamp
    if result is None:
        raise UnknownInitializationError("no events to replay")
    if whole and result.outcome == "running":
        until = result.alive_until
        if until is not None and until < (now or datetime.now(UTC)):
            seen = result.last_beat_at or until
            _abandon(result, open_items,
                     f"no heartbeat since {seen.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC "
                     f"(abandoned after {liveness.ABANDON_AFTER_BEATS} missed beats of "
                     f"{result.heartbeat_interval_s:g} s): its process likely died")
    return result


def _abandon(r: ReplayedInitialization, open_items: _OpenItems, reason: str) -> None:
    r.outcome, r.error = "abandoned", reason
    for entry in open_items.values():
        entry.status = "abandoned"


_OpenItems = dict[tuple[str, str, str | None], TimelineEntry]


def _begin(r: ReplayedInitialization, open_items: _OpenItems, e: Event, kind: str, phase: str,
           name: str, actor: str | None) -> None:
    entry = TimelineEntry(kind, phase, name, actor, e.timestamp,
                          trace_id=e.trace_id, span_id=e.span_id)
    r.timeline.append(entry)
    open_items[(kind, name, actor)] = entry


def _end(open_items: _OpenItems, kind: str, name: str, actor: str | None, status: str,
         duration: float | None, detail: str = "") -> None:
    entry = open_items.pop((kind, name, actor), None)
    if entry is not None:
        entry.status, entry.duration_s, entry.detail = status, duration, detail


def _copy(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists, scalars): what ``copy.deepcopy`` gives,
    several times faster, so replayed state never shares a dict with an event."""
    if type(value) is dict:
        return {k: _copy(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy(v) for v in value]
    return copy.deepcopy(value) if isinstance(value, dict | list) else value


def _context_changed(r: ReplayedInitialization, _: _OpenItems, e: ContextChanged) -> None:
    if e.key is None:
        r.state[e.field] = _copy(e.new)
        return
    target = r.state.get(e.field)
    if not isinstance(target, dict):
        target = r.state[e.field] = {}
    if e.removed:
        target.pop(e.key, None)
    else:
        target[e.key] = _copy(e.new)


def _phase_started(r: ReplayedInitialization, open_items: _OpenItems, e: PhaseStarted) -> None:
    r.current_phase, r.current_activity = e.phase, None
    _begin(r, open_items, e, "phase", e.phase, e.phase, None)


def _phase_completed(_: ReplayedInitialization, open_items: _OpenItems,
                     e: PhaseCompleted) -> None:
    _end(open_items, "phase", e.phase, None, "completed", e.duration_s)


def _phase_failed(_: ReplayedInitialization, open_items: _OpenItems, e: PhaseFailed) -> None:
    _end(open_items, "phase", e.phase, None, "failed", e.duration_s, e.message)


def _phase_skipped(r: ReplayedInitialization, _: _OpenItems, e: PhaseSkipped) -> None:
    r.timeline.append(TimelineEntry("step", e.phase, e.step, None, e.timestamp, 0.0,
                                    "skipped", f"skipped by {e.skipped_by}.{e.hook}"))


def _hook_started(r: ReplayedInitialization, open_items: _OpenItems, e: HookStarted) -> None:
    r.current_activity = f"{e.callback}.{e.hook}"
    _begin(r, open_items, e, "hook", e.phase, e.hook, e.callback)


def _hook_completed(r: ReplayedInitialization, open_items: _OpenItems,
                    e: HookCompleted) -> None:
    r.current_activity = None
    _end(open_items, "hook", e.hook, e.callback, "completed", e.duration_s,
         "returned False" if e.skipped_default else "")


def _hook_failed(r: ReplayedInitialization, open_items: _OpenItems, e: HookFailed) -> None:
    r.current_activity = None
    _end(open_items, "hook", e.hook, e.callback, "failed", e.duration_s, e.message)


def _step_started(r: ReplayedInitialization, open_items: _OpenItems, e: StepStarted) -> None:
    r.current_activity = f"{e.step} step"
    _begin(r, open_items, e, "step", e.phase, e.step, None)


def _step_progressed(r: ReplayedInitialization, _: _OpenItems, e: StepProgressed) -> None:
    r.progress.update(e.details)
    node_id = e.details.get("node_id")
    if isinstance(node_id, str):
        r.nodes[node_id] = {**r.nodes.get(node_id, {}), **e.details, "at": e.timestamp}


def _step_completed(r: ReplayedInitialization, open_items: _OpenItems,
                    e: StepCompleted) -> None:
    r.current_activity = None
    _end(open_items, "step", e.step, None, "completed", e.duration_s)


def _step_failed(r: ReplayedInitialization, open_items: _OpenItems, e: StepFailed) -> None:
    r.current_activity = None
    _end(open_items, "step", e.step, None, "failed", e.duration_s, e.message)


def _weights_route(r: ReplayedInitialization, _: _OpenItems, e: WeightsRouteChosen) -> None:
    # The timeline prints an entry as "<kind> <name>": "weights streamed by vLLM: ...".
    r.timeline.append(TimelineEntry("weights", r.current_phase or "download",
                                    e.reason.removeprefix("weights "), None, e.timestamp, 0.0,
                                    "completed", e.reason, e.trace_id, e.span_id))


def _launched(r: ReplayedInitialization, _: _OpenItems, e: ReplicaLaunched) -> None:
    r.scheduling_s, r.boot_s = e.scheduling_s, e.boot_s


def _ready(r: ReplayedInitialization, _: _OpenItems, e: ReplicaReady) -> None:
    r.ready_s = e.since_initialization_s


def _artifact_restored(r: ReplayedInitialization, _: _OpenItems, e: ArtifactRestored) -> None:
    if not r.warm_start.get("result"):  # the first node's (this process's) restore
        r.warm_start.update(result="hit", key=e.key, bytes=e.bytes, seconds=e.seconds)


def _artifact_missed(r: ReplayedInitialization, _: _OpenItems, e: ArtifactMissed) -> None:
    if not r.warm_start.get("result"):
        r.warm_start.update(result="miss", reason=e.reason, key=e.key, seconds=e.seconds,
                            differs=dict(e.differs))


def _artifact_use_observed(r: ReplayedInitialization, _: _OpenItems,
                           e: ArtifactUseObserved) -> None:
    if "used" not in r.warm_start:  # the first node's (this process's) engine
        r.warm_start["used"] = e.used
        r.warm_start["vllm"] = {
            "restored": e.restored, "aot": e.aot, "aot_reason": e.aot_reason,
            "graphs_loaded": e.graphs_loaded, "graphs_compiled": e.graphs_compiled,
            "compiled": e.compiled, "model_info_cached": e.model_info_cached,
            "cache_disabled": e.cache_disabled}


def _artifact_published(r: ReplayedInitialization, _: _OpenItems,
                        e: ArtifactPublished | ArtifactPublishSkipped) -> None:
    if isinstance(e, ArtifactPublished):
        r.warm_start["published"] = {"result": "published", "bytes": e.bytes,
                                     "seconds": e.seconds}
    else:
        r.warm_start["published"] = {"result": "skipped", "reason": e.reason}


def _weights_loaded(r: ReplayedInitialization, _: _OpenItems, e: WeightsLoaded) -> None:
    r.weights.append({"node": e.node, "worker": e.worker, "bytes": e.bytes, "files": e.files,
                      "seconds": e.seconds, "bytes_per_s": e.bytes_per_s,
                      "load_format": e.load_format, "source": e.source,
                      "ended_at": e.ended_at})


def _init_completed(r: ReplayedInitialization, _: _OpenItems,
                    e: InitializationCompleted) -> None:
    r.outcome, r.duration_s, r.current_phase = "completed", e.duration_s, None


def _init_failed(r: ReplayedInitialization, _: _OpenItems, e: InitializationFailed) -> None:
    r.outcome, r.duration_s, r.error = "failed", e.duration_s, e.message


def _heartbeat(r: ReplayedInitialization, _: _OpenItems, e: HeartbeatRecorded) -> None:
    r.last_beat_at, r.heartbeat_interval_s = e.timestamp, e.interval_s


def _init_abandoned(r: ReplayedInitialization, open_items: _OpenItems,
                    e: InitializationAbandoned) -> None:
    _abandon(r, open_items, e.reason)


def _download_overlapped(r: ReplayedInitialization, _: _OpenItems,
                         e: DownloadOverlapped) -> None:
    r.overlapped_s = e.overlapped_s


def _ignore(r: ReplayedInitialization, open_items: _OpenItems, e: Event) -> None:
    pass


_Apply = Callable[[ReplayedInitialization, _OpenItems, Any], None]
# One lookup by exact type instead of a chain of isinstance tests; a subclass of an event
# type gets its base's handler (found once through its MRO), as a class pattern would.
_HANDLERS: dict[type, _Apply] = {
    ContextChanged: _context_changed,
    PhaseStarted: _phase_started,
    PhaseCompleted: _phase_completed,
    PhaseFailed: _phase_failed,
    PhaseSkipped: _phase_skipped,
    HookStarted: _hook_started,
    HookCompleted: _hook_completed,
    HookFailed: _hook_failed,
    StepStarted: _step_started,
    StepProgressed: _step_progressed,
    StepCompleted: _step_completed,
    StepFailed: _step_failed,
    ReplicaLaunched: _launched,
    ReplicaReady: _ready,
    ArtifactRestored: _artifact_restored,
    ArtifactMissed: _artifact_missed,
    ArtifactPublished: _artifact_published,
    ArtifactUseObserved: _artifact_use_observed,
    ArtifactPublishSkipped: _artifact_published,
    WeightsRouteChosen: _weights_route,
    WeightsLoaded: _weights_loaded,
    InitializationCompleted: _init_completed,
    InitializationFailed: _init_failed,
    HeartbeatRecorded: _heartbeat,
    InitializationAbandoned: _init_abandoned,
    DownloadOverlapped: _download_overlapped,
}


def _handler(cls: type) -> _Apply:
    found = next((_HANDLERS[c] for c in cls.__mro__ if c in _HANDLERS), _ignore)
    _HANDLERS[cls] = found
    return found


def list_initializations(store: EventStore, limit: int = 50) -> Sequence[ReplayedInitialization]:
    """The latest initializations, newest first, each replayed to its last event (the fleet
    query ``llm_init.fleet.find_initializations`` with no filter)."""
    from llm_init.fleet.query import find_initializations  # fleet is built on replay

    return find_initializations(store, InitQuery(limit=limit))


def resolve_init_id(store: EventStore, prefix: str, *, search: int | None = None) -> str:
    """Accept a unique prefix of an init id, as git does for commits: one indexed range query
    on stores that offer ``find_init_ids``; on others the ids of the newest ``search``
    initializations (all when ``None``) are scanned."""
    if store.read(prefix, upto=1):
        return prefix
    if isinstance(store, PrefixSearchStore):
        matches = store.find_init_ids(prefix, 2)
    else:
        matches = [i for i in store.list_init_ids(search if search is not None else 10**9)
                   if i.startswith(prefix)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UnknownInitializationError(f"no initialization {prefix!r} in the event store")
    # Counting every match would cost a scan at a short prefix; two prove the ambiguity.
    count = f"{len(matches)}" if len(matches) > 2 else "several"
    raise UnknownInitializationError(
        f"{prefix!r} is ambiguous: {count} initializations start with it"
    )
