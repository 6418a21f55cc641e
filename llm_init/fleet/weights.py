"""The weights' movement of initializations: per node and worker, per phase (the download
step's fetch, the engine's own load), and the throughput percentiles of many initializations."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from llm_init.events import Event, InitializationStarted, StepProgressed, WeightsLoaded
from llm_init.fleet.query import query_initializations
from llm_init.fleet.stats import percentile
from llm_init.replay import read_events
from llm_init.stores.base import EventStore, InitQuery
from llm_init.telemetry import names

PHASES = (names.WEIGHT_PHASE_DOWNLOAD, names.WEIGHT_PHASE_ENGINE)


@dataclass(frozen=True, slots=True)
class WeightTransfer:
    """Weights moved once: by the download step on ``node`` (bytes fetched from the source),
    or by an engine ``worker`` (bytes of the weight files it loaded)."""

    phase: str  # download | engine
    node: str | None
    worker: str | None
    bytes: int
    seconds: float | None
    bytes_per_s: float | None
    load_format: str | None = None  # the engine's; None for the download


def weight_transfers(events: Iterable[Event]) -> list[WeightTransfer]:
    """Every transfer in one log: each node's finished download (the sum of its reported
    ``bytes_delta``), then each ``WeightsLoaded``, in log order."""
    fetched: dict[str, int] = {}
    out: list[WeightTransfer] = []
    for e in events:
        if isinstance(e, WeightsLoaded):
            out.append(WeightTransfer(names.WEIGHT_PHASE_ENGINE, e.node, e.worker, e.bytes,
                                      e.seconds, e.bytes_per_s, e.load_format))
        elif isinstance(e, StepProgressed) and e.step == names.STEP_DOWNLOAD:
            done = download_done(e, fetched)
            if done is not None:
                out.append(done)
    return out


def download_done(e: StepProgressed, fetched: dict[str, int]) -> WeightTransfer | None:
    """Feed one download progress event; a node's ``node_completed`` gives its transfer (the
    bytes it fetched, summed over its ``bytes_delta``), else ``None``."""
    details = e.details
    node = details.get("node_id")
    if not isinstance(node, str):
        return None
    delta = details.get(names.DETAIL_BYTES_DELTA)
    if isinstance(delta, int) and not isinstance(delta, bool) and delta > 0:
        fetched[node] = fetched.get(node, 0) + delta
    if details.get("stage") != "node_completed":
        return None
    size = fetched.pop(node, 0)
    seconds = details.get("seconds")
    secs = float(seconds) if isinstance(seconds, int | float) else None
    rate = size / secs if secs and size else None
    return WeightTransfer(names.WEIGHT_PHASE_DOWNLOAD, node, None, size, secs, rate)


def by_phase(transfers: Sequence[WeightTransfer]) -> dict[str, dict[str, Any]]:
    """Per phase: ``bytes`` (all nodes and workers), ``seconds`` (the slowest: they run side
    by side) and ``bytes_per_s`` (the one over the other); the engine's ``load_format`` too."""
    out: dict[str, dict[str, Any]] = {}
    for phase in PHASES:
        found = [t for t in transfers if t.phase == phase]
        if not found:
            continue
        size = sum(t.bytes for t in found)
        times = [t.seconds for t in found if t.seconds is not None]
        seconds = max(times) if times else None
        out[phase] = {"bytes": size, "seconds": seconds,
                      "bytes_per_s": round(size / seconds, 1) if seconds and size else None}
        if phase == names.WEIGHT_PHASE_ENGINE:
            out[phase]["load_format"] = found[0].load_format
    return out


@dataclass(frozen=True, slots=True)
class WeightStats:
    """Throughput of one phase of one model's weight movement across initializations: one
    sample per node (download) or worker (engine) that moved bytes in a known time."""

    model: str
    phase: str
    count: int
    p50_bytes_per_s: float
    p95_bytes_per_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize_weights(samples: Iterable[tuple[str, str, float]]) -> list[WeightStats]:
    """p50/p95 of ``(model, phase, bytes_per_s)`` samples, by model, then phase in run order."""
    grouped: dict[tuple[str, str], list[float]] = defaultdict(list)
    for model, phase, rate in samples:
        grouped[(model, phase)].append(rate)
    order = {p: i for i, p in enumerate(PHASES)}
    out = []
    for (model, phase) in sorted(grouped, key=lambda k: (k[0], order.get(k[1], 99), k[1])):
        values = sorted(grouped[(model, phase)])
        out.append(WeightStats(model, phase, len(values), percentile(values, 50),
                               percentile(values, 95)))
    return out


def weight_stats(store: EventStore, query: InitQuery) -> list[WeightStats]:
    """p50/p95 of weight throughput per model and phase over every init matching ``query``
    (read from each one's log)."""
    samples: list[tuple[str, str, float]] = []
    for init_id in query_initializations(store, query):
        events = read_events(store, init_id)
        first = events[0]
        model = first.model_id if isinstance(first, InitializationStarted) else "unknown"
        samples.extend((model, t.phase, t.bytes_per_s) for t in weight_transfers(events)
                       if t.bytes_per_s)
    return summarize_weights(samples)
