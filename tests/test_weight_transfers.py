"""The weights' movement read from one log: each node's download from its progress reports,
each engine worker's ``WeightsLoaded``, and the per-phase totals ``diff`` compares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from llm_init.events import Event, StepProgressed, WeightsLoaded
from llm_init.weight_transfers import WeightTransfer, by_phase, weight_transfers

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def progress(**details: Any) -> StepProgressed:
    return StepProgressed(init_id="i", sequence=1, timestamp=T0, phase="download",
                          step="download", details=details)


def loaded(worker: str, size: int, seconds: float) -> WeightsLoaded:
    return WeightsLoaded(init_id="i", sequence=1, timestamp=T0, bytes=size, files=1,
                         seconds=seconds, bytes_per_s=size / seconds, worker=worker, node="a",
                         load_format="runai_streamer")


LOG: list[Event] = [
    progress(node_id="a", stage="fetching", bytes_delta=1000),
    progress(node_id="b", stage="fetching", bytes_delta=500),
    progress(node_id="a", stage="node_completed", bytes_delta=3000, seconds=2.0),
    progress(node_id="b", stage="node_completed", bytes_delta=0, seconds=4.0),
    progress(stage="no node: an older step's report", bytes_delta=99),
    loaded("VllmWorker-0", 8000, 1.0),
    loaded("VllmWorker-1", 8000, 2.0),
]


def test_each_node_and_worker_is_one_transfer_in_log_order() -> None:
    """A node's bytes are the sum of its increments up to its completion; workers follow."""
    assert weight_transfers(LOG) == [
        WeightTransfer("download", "a", None, 4000, 2.0, 2000.0),
        WeightTransfer("download", "b", None, 500, 4.0, 125.0),
        WeightTransfer("engine", "a", "VllmWorker-0", 8000, 1.0, 8000.0, "runai_streamer"),
        WeightTransfer("engine", "a", "VllmWorker-1", 8000, 2.0, 4000.0, "runai_streamer"),
    ]


def test_per_phase_the_bytes_add_up_over_the_slowest_time() -> None:
    """Nodes and workers run side by side: a phase's bytes/s is all its bytes over its
    slowest member's seconds."""
    assert by_phase(weight_transfers(LOG)) == {
        "download": {"bytes": 4500, "seconds": 4.0, "bytes_per_s": 1125.0},
        "engine": {"bytes": 16000, "seconds": 2.0, "bytes_per_s": 8000.0,
                   "load_format": "runai_streamer"},
    }


def test_a_log_without_weights_has_no_phases() -> None:
    """No download progress and no engine load: nothing to compare."""
    assert by_phase(weight_transfers([])) == {}
