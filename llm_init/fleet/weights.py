"""Weight throughput across initializations: p50/p95 of bytes/s per model and phase.

The phases are the download step's fetch and the engine's own load, each from its log.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from llm_init.events import InitializationStarted
from llm_init.fleet.query import query_initializations
from llm_init.fleet.stats import percentile
from llm_init.replay import read_events
from llm_init.stores.base import EventStore, InitQuery
from llm_init.weight_transfers import PHASES, weight_transfers


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
