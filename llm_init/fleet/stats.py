"""Percentiles of phase durations, computed from the log's ``PhaseCompleted`` events."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from llm_init.fleet.query import query_durations
from llm_init.phases import PHASES
from llm_init.stores.base import EventStore, InitQuery
from llm_init.stores.index import TOTAL

_ORDER = [spec.phase.value for spec in PHASES] + [TOTAL]


@dataclass(frozen=True, slots=True)
class PhaseStats:
    """How long one phase took across the matching inits (``total``: whole inits)."""

    phase: str
    count: int
    p50: float
    p95: float
    p99: float
    mean: float
    max: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of sorted ``values``, interpolating linearly between
    the two nearest ranks (numpy's default)."""
    if not values:
        raise ValueError("no values")
    rank = (len(values) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return values[low] + (values[high] - values[low]) * (rank - low)


def summarize(samples: Iterable[tuple[str, float]]) -> list[PhaseStats]:
    """Per-phase statistics of ``(phase, seconds)`` samples, phases in their run order."""
    by_phase: dict[str, list[float]] = defaultdict(list)
    for phase, seconds in samples:
        by_phase[phase].append(seconds)
    known = [p for p in _ORDER if p in by_phase]
    out = []
    for phase in known + sorted(set(by_phase) - set(known)):
        values = sorted(by_phase[phase])
        out.append(PhaseStats(phase, len(values), percentile(values, 50),
                              percentile(values, 95), percentile(values, 99),
                              sum(values) / len(values), values[-1]))
    return out


def phase_stats(store: EventStore, query: InitQuery) -> list[PhaseStats]:
    """p50/p95/p99 per phase (and in total) over every init matching ``query``; phases of
    failed inits count up to the phase that failed."""
    return summarize(query_durations(store, query))
