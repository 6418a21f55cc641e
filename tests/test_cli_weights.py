"""The weights' transfer in the CLI: the timeline's ``weight_loading`` row, ``diff``'s weights
values and ``stats --weights``' throughput percentiles per model."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from llm_init.stores import SQLiteEventStore
from tests.support.cli import invoke
from tests.support.logs import T0, records, weights_log


@pytest.fixture
def store(tmp_path: Path) -> str:
    path = tmp_path / "events.sqlite"
    events = SQLiteEventStore(path)
    events.append(records(weights_log("fast", loaded=4_000_000_000, load_s=2.0)))
    events.append(records(weights_log("slow", loaded=4_000_000_000, load_s=8.0,
                                      fetched=3_000_000, fetch_s=3.0,
                                      load_format="runai_streamer")))
    events.append(records(weights_log("other", model_id="n", loaded=1_000_000_000)))
    return str(path)


def test_timeline_shows_the_workers_weight_loading_row_with_size_and_rate(store: str) -> None:
    """Under the engine step, the worker's row: its bar where its log put it (3 s to 5 s of
    10), its seconds, bytes, GB/s and load format."""
    result = invoke("timeline", "fast", "--store", store, width=120)
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.output.splitlines() if "weight_loading" in line]
    assert row.rstrip() == (
        "        └── " + " " * 9 + "▒" * 6 + " " * 15 + " +   3.00 s    2.00 s  weight_loading "
        "(EngineCore) 4.0 GB 2.00 GB/s auto")


def test_timeline_json_carries_the_weight_transfers(store: str) -> None:
    """``timeline --json`` lists each worker's transfer as recorded."""
    result = invoke("timeline", "fast", "--store", store, "--json")
    assert json.loads(result.output)["weights"] == [{
        "node": "a", "worker": "EngineCore", "bytes": 4_000_000_000, "files": 2,
        "seconds": 2.0, "bytes_per_s": 2e9, "load_format": "auto", "source": "vllm_log",
        "ended_at": (T0 + timedelta(seconds=5)).timestamp()}]


def test_diff_compares_the_bytes_seconds_and_rate_of_each_phase(store: str) -> None:
    """``diff`` lists the weights values that differ: download and engine seconds and
    bytes/s; the bytes moved were the same."""
    result = invoke("diff", "fast", "slow", "--store", store, "--json")
    weights = [v for v in json.loads(result.output)["values"] if v["section"] == "weights"]
    assert weights == [
        {"section": "weights", "path": "download.bytes_per_s", "a": 1.5e6, "b": 1e6},
        {"section": "weights", "path": "download.seconds", "a": 2.0, "b": 3.0},
        {"section": "weights", "path": "engine.bytes_per_s", "a": 2e9, "b": 5e8},
        {"section": "weights", "path": "engine.load_format", "a": "auto",
         "b": "runai_streamer"},
        {"section": "weights", "path": "engine.seconds", "a": 2.0, "b": 8.0},
    ]


def test_stats_weights_gives_throughput_percentiles_per_model_and_phase(store: str) -> None:
    """``stats --weights``: p50/p95 of bytes/s, one row per model and phase, download first."""
    result = invoke("stats", "--weights", "--store", store, width=100)
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "│" in line or "┃" in line]
    assert rows == [
        "┃ model ┃ phase    ┃ n ┃        p50 ┃        p95 ┃",
        "│ m     │ download │ 2 │   1.2 MB/s │   1.5 MB/s │",
        "│ m     │ engine   │ 2 │  1.25 GB/s │  1.93 GB/s │",
        "│ n     │ download │ 1 │   1.5 MB/s │   1.5 MB/s │",
        "│ n     │ engine   │ 1 │ 500.0 MB/s │ 500.0 MB/s │",
    ]


def test_stats_weights_json(store: str) -> None:
    """``stats --weights --json``: the same rows as numbers."""
    result = invoke("stats", "--weights", "--store", store, "--json")
    assert json.loads(result.output) == [
        {"model": "m", "phase": "download", "count": 2, "p50_bytes_per_s": 1.25e6,
         "p95_bytes_per_s": pytest.approx(1.475e6)},
        {"model": "m", "phase": "engine", "count": 2, "p50_bytes_per_s": 1.25e9,
         "p95_bytes_per_s": pytest.approx(1.925e9)},
        {"model": "n", "phase": "download", "count": 1, "p50_bytes_per_s": 1.5e6,
         "p95_bytes_per_s": 1.5e6},
        {"model": "n", "phase": "engine", "count": 1, "p50_bytes_per_s": 5e8,
         "p95_bytes_per_s": 5e8},
    ]
