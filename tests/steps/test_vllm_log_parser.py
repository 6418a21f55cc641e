"""The weights' lines of vLLM's start-up log, as vLLM 0.32's CPU build and the RunAI Model
Streamer 0.17.1 logged them (``tests/fixtures/vllm_logs/weights_*.log``), become one
``weight_loading`` sub-phase and one ``WeightLoad`` per worker process."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_init.steps.vllm_log_parser import (
    LogLine,
    StartupParser,
    Subphase,
    WeightLoad,
    parse_binary_size,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "vllm_logs"


def lines(name: str) -> list[LogLine]:
    out = []
    for line in (FIXTURES / f"weights_{name}.log").read_text().splitlines():
        created, process, level, text = line.split(" ", 3)
        out.append(LogLine(float(created), level, process, text))
    return out


def fed(name: str) -> tuple[StartupParser, list[Subphase]]:
    log = lines(name)
    parser = StartupParser(log[0].created)
    return parser, [sub for line in log for sub in parser.feed(line)]


def test_the_default_loaders_line_times_the_workers_weight_load() -> None:
    """vLLM's "Loading weights took 0.01 seconds" is the worker's weight_loading sub-phase and
    its WeightLoad, ending at that line."""
    parser, found = fed("default")
    assert [s for s in found if s.name == "weight_loading"] == [
        Subphase("weight_loading", 0.01, "vllm_log", "VllmWorker-0")]
    assert list(parser.weight_loads.values()) == [
        WeightLoad("VllmWorker-0", 0.01, 1796544192.117102, "vllm_log", None)]


def test_a_streaming_load_is_timed_by_the_streamers_overall_line() -> None:
    """With runai_streamer vLLM logs no "Loading weights took"; the streamer's "Overall time to
    stream 1.1 MiB ...: 0.3s" is the weight_loading sub-phase, with its (rounded) size."""
    parser, found = fed("runai")
    assert [(s.name, s.duration_s, s.source, s.process) for s in found] == [
        ("engine_process_start", pytest.approx(34.817257), "derived", "EngineCore"),
        ("model_init", 0.311507, "vllm_log", "VllmWorker-0"),
        ("weight_loading", 0.3, "streamer_log", "VllmWorker-0"),
        ("init_engine", 2.18, "vllm_log", "EngineCore"),
        ("kv_cache_profiling", pytest.approx(0.017093, abs=1e-5), "derived", "EngineCore"),
        ("kv_cache_allocation_and_warmup", pytest.approx(2.162907, abs=1e-5), "derived",
         "EngineCore"),
    ]
    assert list(parser.weight_loads.values()) == [
        WeightLoad("VllmWorker-0", 0.3, 1796544290.509315, "streamer_log", 1153434)]


def test_a_process_logging_both_lines_reports_one_weight_loading_the_streamers() -> None:
    """A loader that logs vLLM's line besides the streamer's: one sub-phase, the streamer's
    time kept as the transfer."""
    parser = StartupParser(0.0)
    found = parser.feed(LogLine(5.0, "INFO", "VllmWorker-0", "Loading weights took 0.50 seconds"))
    found += parser.feed(LogLine(6.0, "INFO", "VllmWorker-0", "[RunAI Streamer] Overall time "
                                 "to stream 2.0 GiB of all files to cpu: 0.42s, 4.8 GiB/s"))
    assert found == [Subphase("weight_loading", 0.5, "vllm_log", "VllmWorker-0")]
    assert parser.weight_loads == {"VllmWorker-0": WeightLoad(
        "VllmWorker-0", 0.42, 6.0, "streamer_log", 2 << 30)}


def test_a_load_below_the_lines_precision_is_timed_from_the_model_init_line() -> None:
    """"Loading weights took 0.00 seconds" (a tiny model): the time since the same process's
    "Initializing model took" record stands in."""
    parser = StartupParser(0.0)
    parser.feed(LogLine(10.0, "INFO", "EngineCore", "Initializing model took 0.311507 seconds"))
    (sub,) = parser.feed(LogLine(10.004, "INFO", "EngineCore",
                                 "Loading weights took 0.00 seconds"))
    assert sub.duration_s == pytest.approx(0.004)


def test_each_worker_process_has_its_own_weight_load() -> None:
    """Two tensor-parallel workers each log their load: two sub-phases, two WeightLoads."""
    parser = StartupParser(0.0)
    for worker, seconds in (("VllmWorker-0", "1.25"), ("VllmWorker-1", "1.40")):
        parser.feed(LogLine(3.0, "INFO", worker, f"Loading weights took {seconds} seconds"))
    assert {p: w.seconds for p, w in parser.weight_loads.items()} == {
        "VllmWorker-0": 1.25, "VllmWorker-1": 1.4}


@pytest.mark.parametrize(("text", "size"), [
    ("1.1 MiB", 1153434), ("8 Bytes", 8), ("1 Byte", 1), ("2.0 GiB", 2 << 30),
    ("256.0 KiB", 256 << 10), ("3 parsecs", None), ("x MiB", None)])
def test_the_streamers_sizes_read_back(text: str, size: int | None) -> None:
    """humanize's binary sizes, as the streamer prints them, back to bytes."""
    assert parse_binary_size(text) == size
