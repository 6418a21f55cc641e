"""The engine step's parts that need no engine: where the model is, which arguments win, how
vLLM's log lines become sub-phases and errors, and the trace context for its processes."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pathlib
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import pytest

from llm_init import LLMConfig, NodeInitializationContext
from llm_init.steps.engine import merged_engine_kwargs, model_path_from
from llm_init.steps.vllm_startup import (
    EngineStartError,
    EngineStartWatch,
    LogLine,
    StartupParser,
    root_cause,
    traceparent_env,
)
from tests.support.vllm_logging import FakeLoggingConfig


@pytest.mark.parametrize("result", [
    "/models/m", pathlib.Path("/models/m"), {"path": "/models/m"},
    {"local_path": "/models/m", "path": "/elsewhere"}, SimpleNamespace(local_path="/models/m"),
    SimpleNamespace(path=pathlib.Path("/models/m")),
])
def test_model_path_from_accepts_paths_mappings_and_objects(result):
    """A path, a mapping or an object with ``local_path`` (preferred) or ``path``."""
    assert model_path_from(result) == "/models/m"


def test_model_path_from_none_and_unusable_results():
    """No result means no path; a result without a path is an error that says so."""
    assert model_path_from(None) is None
    with pytest.raises(TypeError, match="without a 'local_path' or 'path' key"):
        model_path_from({"bytes": 3})
    with pytest.raises(TypeError, match="int with no 'local_path' or 'path'"):
        model_path_from(3)


def test_callback_engine_kwargs_win():
    """``extra_init_kwargs`` go over ``engine_kwargs``; the config itself is not changed."""
    config = LLMConfig(model_id="m", engine_kwargs={"dtype": "bfloat16", "max_num_seqs": 4})
    ctx = NodeInitializationContext.for_config("i", config)
    ctx.extra_init_kwargs = {"max_num_seqs": 2, "seed": 7}
    assert merged_engine_kwargs(ctx) == {"dtype": "bfloat16", "max_num_seqs": 2, "seed": 7}
    assert config.engine_kwargs == {"dtype": "bfloat16", "max_num_seqs": 4}


# What vLLM 0.32 logs while it starts on the CPU and on a GPU (times are seconds after start).
STARTUP_LOG = [
    (14.0, "INFO", "EngineCore", "Initializing a V1 LLM engine (v0.32.0) with config: ..."),
    (17.1, "INFO", "EngineCore", "Initializing model took 0.428431 seconds"),
    (17.2, "INFO", "EngineCore", "Loading weights took 0.01 seconds"),
    (17.3, "INFO", "EngineCore", "Model loading took 14.99 GiB memory and 15.812 seconds"),
    (40.0, "INFO", "EngineCore", "torch.compile took 60.82 s in total"),
    (41.0, "INFO", "EngineCore", "CPU KV cache size: 2,097,152 tokens"),
    (50.0, "INFO", "EngineCore", "Graph capturing finished in 16 secs, took 0.50 GiB"),
    (51.0, "INFO", "EngineCore",
     "init engine (profile, create kv cache, warmup model) took 30.00 s"),
]


def test_parser_turns_vllm_log_lines_into_subphases():
    """Each timing line is a sub-phase; process start and the KV-cache split are derived."""
    parser = StartupParser(started_at=0.0)
    found = [sub for line in STARTUP_LOG for sub in parser.feed(LogLine(*line))]
    assert [(s.name, round(s.duration_s, 3), s.source) for s in found] == [
        ("engine_process_start", 14.0, "derived"),
        ("model_init", 0.428, "vllm_log"),
        ("weight_loading", 0.01, "vllm_log"),
        ("model_loading", 15.812, "vllm_log"),
        ("torch_compile", 60.82, "vllm_log"),
        ("cuda_graph_capture", 16.0, "vllm_log"),
        ("init_engine", 30.0, "vllm_log"),
        ("kv_cache_profiling", 20.0, "derived"),  # 51 - 30 = 21 to 41
        ("kv_cache_allocation_and_warmup", 10.0, "derived"),
    ]
    assert {s.process for s in found} == {"EngineCore"}
    assert parser.root_cause() is None


def test_root_cause_is_the_last_line_of_the_logged_traceback():
    """vLLM logs "EngineCore failed to start." with the traceback; its last line is the cause."""
    text = ("EngineCore failed to start.\nTraceback (most recent call last):\n  File \"x\"\n"
            "RuntimeError: Cannot find any model weights with `/m`\n")
    assert root_cause(text) == "RuntimeError: Cannot find any model weights with `/m`"
    assert root_cause("Engine died.\nmore") == "Engine died."
    parser = StartupParser(0.0)
    parser.feed(LogLine(1.0, "ERROR", "EngineCore", text))
    assert parser.root_cause() == "RuntimeError: Cannot find any model weights with `/m`"


def test_traceparent_is_the_current_span_while_inside_and_restored_after(monkeypatch):
    """Processes started inside continue the current span's trace; the environment is put
    back as it was."""
    from opentelemetry.sdk.trace import TracerProvider

    monkeypatch.setenv("TRACESTATE", "kept=1")
    monkeypatch.delenv("TRACEPARENT", raising=False)
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("engine step") as span:
        ids = span.get_span_context()
        with traceparent_env() as carrier:
            assert os.environ["TRACEPARENT"] == carrier["traceparent"]
            assert os.environ["TRACEPARENT"].startswith(
                f"00-{ids.trace_id:032x}-{ids.span_id:016x}-")
    assert "TRACEPARENT" not in os.environ
    assert os.environ["TRACESTATE"] == "kept=1"


CHILD = """
import json, logging, logging.config, sys
logging.config.dictConfig(json.load(open(sys.argv[1])))
log = logging.getLogger("vllm.model_executor")
log.info("Loading weights took 0.25 seconds")
try:
    raise RuntimeError("Cannot find any model weights with `/m`")
except RuntimeError:
    log.exception("EngineCore failed to start.")
"""


def test_watch_reads_a_child_process_log_and_quotes_its_error(tmp_path):
    """A process configured from the watch's logging config (as vLLM's EngineCore is) gets its
    timings reported and its error quoted in the failure, while the call runs in a thread."""
    user_config = tmp_path / "user.json"
    user_config.write_text(json.dumps({"version": 1, "handlers": {"out": {
        "class": "logging.StreamHandler", "stream": "ext://sys.stdout"}},
        "loggers": {"vllm": {"handlers": ["out"], "level": "WARNING"}}}))
    vllm_config = SimpleNamespace(logging_config=FakeLoggingConfig(
        pylogging_config_file=str(user_config)))
    reports: list[dict[str, Any]] = []

    def engine_core() -> None:
        config = vllm_config.logging_config.pylogging_config_file
        done = subprocess.run([sys.executable, "-c", CHILD, config], capture_output=True,
                              text=True, check=True)
        assert "Loading weights" not in done.stdout  # the user's handler keeps WARNING
        raise RuntimeError("Engine core initialization failed. See root cause above.")

    async def start() -> None:
        async with EngineStartWatch(lambda **d: reports.append(d), poll_s=0.05) as watch:
            assert watch.capture_child_logs(vllm_config)
            await watch.call(engine_core)

    with pytest.raises(EngineStartError) as raised:
        asyncio.run(start())
    assert str(raised.value) == (
        "RuntimeError: Engine core initialization failed. See root cause above. "
        "(vLLM: RuntimeError: Cannot find any model weights with `/m`)")
    assert [(r["subphase"], r["duration_s"], r["source"]) for r in reports] == [
        ("weight_loading", 0.25, "vllm_log")]
    assert not pathlib.Path(vllm_config.logging_config.pylogging_config_file).exists()


def test_watch_reports_in_process_records_and_measures_calls():
    """Records of this process's ``vllm`` loggers count too; ``subphase=`` times the call."""
    reports: list[dict[str, Any]] = []

    def blocking() -> str:
        logging.getLogger("vllm.engine").info("Initializing model took 0.5 seconds")
        return "engine"

    async def start() -> str:
        async with EngineStartWatch(lambda **d: reports.append(d), poll_s=0.05) as watch:
            return await watch.call(blocking, subphase="engine_core_start")

    logging.getLogger("vllm").setLevel(logging.INFO)
    assert asyncio.run(start()) == "engine"
    assert [(r["subphase"], r["source"]) for r in reports] == [
        ("model_init", "vllm_log"), ("engine_core_start", "measured")]
    assert reports[0]["process"] == "MainProcess"


def test_engine_core_side_stops_once_the_file_is_gone_or_full(tmp_path, capsys):
    """The handler EngineCore logs through stops for good when the step removed its file, or
    at its byte cap, and does nothing where the file never was (another node); a serving
    engine neither grows the file nor reports logging errors."""
    from llm_init.steps.vllm_startup import StartupLogFile

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("vllm.x", logging.INFO, __file__, 1, message, None, None)

    elsewhere = StartupLogFile(str(tmp_path / "on-another-node" / "vllm.log"))
    elsewhere.emit(record("Loading weights took 0.01 seconds"))
    assert elsewhere.finished
    assert not (tmp_path / "on-another-node").exists()

    path = tmp_path / "vllm.log"
    path.touch()
    handler = StartupLogFile(str(path))
    handler.emit(record("Loading weights took 0.01 seconds"))
    assert "Loading weights" in path.read_text()
    path.unlink()
    handler.emit(record("serving"))
    handler.emit(record("still serving"))
    assert handler.finished
    assert not path.exists()

    (tmp_path / "capped.log").touch()
    capped = StartupLogFile(str(tmp_path / "capped.log"), max_bytes=100)
    for i in range(50):
        capped.emit(record(f"line {i} " + "x" * 20))
    assert capped.finished
    assert (tmp_path / "capped.log").stat().st_size < 200
    assert capsys.readouterr().err == ""


def test_no_child_capture_when_engine_cores_are_ray_actors():
    """Data parallel over Ray runs engine cores elsewhere: their logging is left alone."""
    config = FakeLoggingConfig()
    vllm_config = SimpleNamespace(
        logging_config=config,
        parallel_config=SimpleNamespace(data_parallel_size=2, data_parallel_backend="ray"))

    async def start() -> bool:
        async with EngineStartWatch(lambda **d: None) as watch:
            return watch.capture_child_logs(vllm_config)

    assert asyncio.run(start()) is False
    assert vllm_config.logging_config is config
