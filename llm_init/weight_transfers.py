"""The weights' movement recorded in one log, per phase.

Each node's download (bytes fetched, from its progress reports) and each engine worker's load
(``WeightsLoaded``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from llm_init.events import Event, StepProgressed, WeightsLoaded
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
