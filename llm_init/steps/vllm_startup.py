"""Watching vLLM start: sub-phase timings and errors from its log lines, and trace context.

Watching vLLM start: sub-phase timings from its log lines, its own error message when it fails,
and the trace context its processes inherit.

vLLM 0.32 exports no start-up metrics; it logs them. The records come from two places: this
process (a handler on the ``vllm`` logger while the engine is built) and the EngineCore process
``AsyncLLM`` spawns, where the model loads. That process configures logging from
``vllm_config.logging_config``; ``capture_child_logs`` points it at a logging configuration that
keeps vLLM's own handlers and adds ``StartupLogFile``, a file a thread here follows until the
engine has started.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import logging
import os
import queue
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry import propagate

from llm_init.environ import environment
from llm_init.steps.base import ProgressReporter
from llm_init.steps.vllm_cache_use import MODEL_INFO_LOGGER, CacheUse, CacheUseParser
from llm_init.telemetry import names

T = TypeVar("T")
_log = logging.getLogger(__name__)

# Sub-phase names: values of ``report(subphase=...)`` and of the metrics' ``subphase`` label.
ENGINE_CONFIG = "engine_config"  # measured: engine arguments to vLLM's config (this process)
ENGINE_CORE_START = "engine_core_start"  # measured: the whole AsyncLLM construction
ENGINE_PROCESS_START = "engine_process_start"  # derived: until EngineCore's first log line
MODEL_INIT = "model_init"  # "Initializing model took X seconds"
WEIGHT_LOADING = names.SUBPHASE_WEIGHT_LOADING  # "Loading weights took X seconds"
MODEL_LOADING = "model_loading"  # "Model loading took X GiB memory and Y seconds" (GPU runners)
TORCH_COMPILE = names.SUBPHASE_TORCH_COMPILE  # "torch.compile took X s in total"
CUDA_GRAPH_CAPTURE = names.SUBPHASE_CUDA_GRAPH_CAPTURE  # "Graph capturing finished in X secs"
INIT_ENGINE = "init_engine"  # "init engine (profile, create kv cache, warmup model) took X s"
# derived: init engine start to "KV cache size"
KV_CACHE_PROFILING = names.SUBPHASE_KV_CACHE_PROFILING
# derived: from there to the end of init engine
KV_CACHE_ALLOCATION_AND_WARMUP = names.SUBPHASE_KV_CACHE_ALLOCATION_AND_WARMUP
SERVING_INIT = "serving_init"  # measured: Ray Serve LLM's serving state after the engine

_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (MODEL_INIT, re.compile(r"Initializing model took ([\d.]+) s")),
    (WEIGHT_LOADING, re.compile(r"Loading weights took ([\d.]+) s")),
    (MODEL_LOADING, re.compile(r"Model loading took [\d.]+ ?GiB(?: memory)? and ([\d.]+) s")),
    (TORCH_COMPILE, re.compile(r"torch\.compile (?:took|takes) ([\d.]+) s in total")),
    (CUDA_GRAPH_CAPTURE, re.compile(r"Graph capturing finished in ([\d.]+) sec")),
    (INIT_ENGINE, re.compile(r"init engine \(profile, create kv cache, warmup model\) "
                             r"took ([\d.]+) s")),
)
_ENGINE_CORE_FIRST_LINE = re.compile(r"Initializing a V1 LLM engine")
_KV_CACHE_SIZED = re.compile(r"KV cache size: [\d,]+ tokens")
_RECORD_START = "\x1e"  # starts every record in the capture file; tracebacks span lines
_CAPTURE_MAX_BYTES = 8 * 1024 * 1024


class EngineStartError(RuntimeError):
    """vLLM failed to start; the message carries vLLM's own root cause when it logged one."""


@dataclass(frozen=True, slots=True)
class LogLine:
    """One vLLM log record: when, how severe, which process, and its text with any traceback."""

    created: float
    level: str
    process: str
    text: str


@dataclass(frozen=True, slots=True)
class Subphase:
    name: str
    duration_s: float
    source: str  # "vllm_log" | "derived" | "measured"
    process: str


class StartupParser:
    """Turns vLLM's start-up log lines into sub-phase timings and remembers its errors."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.errors: list[str] = []
        self.cache = CacheUseParser()
        self._kv_sized_at: float | None = None
        self._core_seen = False

    def feed(self, line: LogLine) -> list[Subphase]:
        first = line.text.split("\n", 1)[0]
        self.cache.feed(first)
        found: list[Subphase] = []
        if not self._core_seen and _ENGINE_CORE_FIRST_LINE.search(first):
            self._core_seen = True
            found.append(Subphase(ENGINE_PROCESS_START, max(0.0, line.created - self.started_at),
                                  "derived", line.process))
        if self._kv_sized_at is None and _KV_CACHE_SIZED.search(first):
            self._kv_sized_at = line.created
        for name, pattern in _RULES:
            match = pattern.search(first)
            if match is None:
                continue
            seconds = float(match.group(1))
            found.append(Subphase(name, seconds, "vllm_log", line.process))
            if name == INIT_ENGINE and self._kv_sized_at is not None:
                began = line.created - seconds
                found.append(Subphase(KV_CACHE_PROFILING, max(0.0, self._kv_sized_at - began),
                                      "derived", line.process))
                found.append(Subphase(KV_CACHE_ALLOCATION_AND_WARMUP,
                                      max(0.0, line.created - self._kv_sized_at), "derived",
                                      line.process))
        if line.level in ("ERROR", "CRITICAL"):
            self.errors.append(root_cause(line.text))
        return found

    def root_cause(self) -> str | None:
        """The last error vLLM logged: the final line of its traceback, else its message."""
        return self.errors[-1] if self.errors else None


def root_cause(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) > 1 and any(ln.startswith("Traceback") for ln in lines):
        return lines[-1]
    return lines[0] if lines else text


class StartupLogFile(logging.FileHandler):
    """EngineCore's side of the capture (named in the logging configuration handed to it):
    appends vLLM's records to the file the engine step follows, and switches itself off for
    good once the step has removed the file (start-up is over) or ``max_bytes`` are written,
    so a long-running engine neither grows a file nor reports a missing one."""

    def __init__(self, filename: str, max_bytes: int = _CAPTURE_MAX_BYTES) -> None:
        super().__init__(filename, mode="a", encoding="utf-8", delay=True)
        self.max_bytes = max_bytes
        # The step creates the file before vLLM starts. A process on another node (or one
        # started after the engine) finds none here, and logs as if this handler were absent.
        self.finished = not os.path.isfile(filename)

    def emit(self, record: logging.LogRecord) -> None:
        if self.finished:
            return
        if not os.path.exists(self.baseFilename) or (
                self.stream is not None and self.stream.tell() >= self.max_bytes):
            self.finished = True
            self.close()
            return
        super().emit(record)


class CaptureFilter(logging.Filter):
    """Lets through INFO and above, and the model-info cache's DEBUG records (whether vLLM
    inspected the model or used its cache is said only at DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO or record.name == MODEL_INFO_LOGGER


class _QueueHandler(logging.Handler):
    def __init__(self, sink: queue.SimpleQueue[LogLine]) -> None:
        super().__init__(logging.DEBUG)
        self.sink = sink
        self.addFilter(CaptureFilter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.sink.put(LogLine(record.created, record.levelname, record.processName or "",
                                  text))
        except Exception:  # a log handler must never raise into vLLM
            self.handleError(record)


class EngineStartWatch:
    """Collects vLLM's start-up records and reports sub-phases while blocking calls run in a
    thread, so the event loop stays free. Use as ``async with``; see ``call``."""

    def __init__(self, report: ProgressReporter, *, poll_s: float = 0.25) -> None:
        self.report = report
        self.poll_s = poll_s
        self.parser = StartupParser(time.time())
        self._lines: queue.SimpleQueue[LogLine] = queue.SimpleQueue()
        self._handler = _QueueHandler(self._lines)
        self._dir: str | None = None
        self._file: str | None = None
        self._offset = 0
        self._buffer = ""
        self._stop = threading.Event()
        self._tail: threading.Thread | None = None
        self._file_lock = threading.Lock()
        self._model_info_level: int | None = None
        self.children_captured = False

    @property
    def cache_use(self) -> CacheUse:
        """What vLLM did with its compile cache, from what it has logged so far."""
        return self.parser.cache.result()

    @property
    def cache_use_seen(self) -> bool:
        """Whether vLLM logged anything about its caches that this watch received."""
        return self.parser.cache.seen

    async def __aenter__(self) -> EngineStartWatch:
        logging.getLogger("vllm").addHandler(self._handler)
        model_info = logging.getLogger(MODEL_INFO_LOGGER)
        if not model_info.isEnabledFor(logging.DEBUG):
            # vLLM's own handlers keep their level, so only this watch sees the DEBUG records.
            self._model_info_level = model_info.level
            model_info.setLevel(logging.DEBUG)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        logging.getLogger("vllm").removeHandler(self._handler)
        if self._model_info_level is not None:
            logging.getLogger(MODEL_INFO_LOGGER).setLevel(self._model_info_level)
        self._stop.set()
        if self._tail is not None:
            await asyncio.to_thread(self._tail.join, 5.0)
        self._read_file(final=True)
        self._flush()
        if self._dir is not None:
            # EngineCore's StartupLogFile sees the file gone and stops writing.
            shutil.rmtree(self._dir, ignore_errors=True)

    def capture_child_logs(self, vllm_config: Any) -> bool:
        """Make vLLM's EngineCore (and its workers) also log into a file this watch follows.
        Returns ``False`` (and changes nothing) when vLLM's logging configuration is switched
        off, or when engine cores run as Ray actors (data parallel over Ray)."""
        logging_config = getattr(vllm_config, "logging_config", None)
        if logging_config is None or not logging_config.configure_logging:
            return False
        parallel = getattr(vllm_config, "parallel_config", None)
        if (getattr(parallel, "data_parallel_size", 1) > 1
                and getattr(parallel, "data_parallel_backend", "mp") == "ray"):
            # Engine cores then run as Ray actors, maybe on other nodes, where the logging
            # configuration file written here does not exist and vLLM would refuse to start.
            return False
        self.parser.started_at = time.time()  # EngineCore starts with the next call
        self._dir = tempfile.mkdtemp(prefix="llm-init-vllm-")
        self._file = os.path.join(self._dir, "vllm.log")
        open(self._file, "w").close()  # StartupLogFile writes only to a file that exists
        config_path = os.path.join(self._dir, "logging.json")
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(_child_logging_config(logging_config, self._file), f)
        vllm_config.logging_config = dataclasses.replace(logging_config,
                                                         pylogging_config_file=config_path)
        self._tail = threading.Thread(target=self._follow, name="llm-init-vllm-logs",
                                      daemon=True)
        self._tail.start()
        self.children_captured = True
        return True

    async def call(self, fn: Callable[[], T], *, subphase: str | None = None) -> T:
        """Run blocking ``fn`` in a thread (inside the current span, with ``TRACEPARENT`` set for
        processes it spawns), reporting sub-phases as they are logged. A failure becomes an
        ``EngineStartError`` that quotes vLLM's root cause."""
        started = time.perf_counter()
        future = asyncio.ensure_future(asyncio.to_thread(_with_traceparent, fn))
        while True:
            done, _ = await asyncio.wait({future}, timeout=self.poll_s)
            if done:
                break
            self._flush()
        self._read_file(final=True)  # what EngineCore logged up to now, its last record too
        self._flush()
        try:
            result = future.result()
        except Exception as exc:
            raise EngineStartError(self._failure_message(exc)) from exc
        if subphase is not None:
            self._report(Subphase(subphase, time.perf_counter() - started, "measured",
                                  "MainProcess"))
        return result

    def measured(self, name: str, seconds: float) -> None:
        self._report(Subphase(name, seconds, "measured", "MainProcess"))

    def _failure_message(self, exc: BaseException) -> str:
        message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        cause = self.parser.root_cause()
        if cause and cause not in message:
            message += f" (vLLM: {cause})"
        return message

    def _report(self, sub: Subphase) -> None:
        self.report(subphase=sub.name, duration_s=round(sub.duration_s, 6), source=sub.source,
                    process=sub.process)

    def _flush(self) -> None:
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return
            for sub in self.parser.feed(line):
                self._report(sub)

    def _follow(self) -> None:
        while not self._stop.wait(0.1):
            self._read_file(final=False)

    def _read_file(self, *, final: bool) -> None:
        if self._file is None:
            return
        with self._file_lock:
            try:
                with open(self._file, encoding="utf-8", errors="replace") as f:
                    f.seek(0, os.SEEK_END)
                    if f.tell() < self._offset:  # the capped file was truncated
                        self._offset, self._buffer = 0, ""
                    f.seek(self._offset)
                    self._buffer += f.read()
                    self._offset = f.tell()
            except FileNotFoundError:
                return
            *complete, self._buffer = self._buffer.split(_RECORD_START)
            if final:
                complete, self._buffer = [*complete, self._buffer], ""
        for raw in complete:
            line = _parse_record(raw)
            if line is not None:
                self._lines.put(line)


def _parse_record(raw: str) -> LogLine | None:
    parts = raw.rstrip("\n").split(" ", 3)
    if len(parts) < 4:
        return None
    try:
        created = float(parts[0])
    except ValueError:
        return None
    return LogLine(created, parts[1], parts[2], parts[3])


def _child_logging_config(logging_config: Any, capture_file: str) -> dict[str, Any]:
    """vLLM's effective logging configuration plus a capped file handler on the ``vllm`` logger."""
    if logging_config.pylogging_config_file:
        with open(logging_config.pylogging_config_file, encoding="utf-8") as f:
            config: dict[str, Any] = json.load(f)
    else:
        config = _vllm_default_config(logging_config)
    config.setdefault("version", 1)
    config.setdefault("disable_existing_loggers", False)
    config.setdefault("formatters", {})["llm_init_capture"] = {
        "format": _RECORD_START + "%(created).6f %(levelname)s %(processName)s %(message)s"}
    config.setdefault("handlers", {})["llm_init_capture"] = {
        "()": f"{__name__}.StartupLogFile", "filename": capture_file,
        "max_bytes": _CAPTURE_MAX_BYTES, "formatter": "llm_init_capture", "level": "DEBUG",
        "filters": ["llm_init_capture"]}
    config.setdefault("filters", {})["llm_init_capture"] = {"()": f"{__name__}.CaptureFilter"}
    loggers = config.setdefault("loggers", {})
    vllm_logger = loggers.setdefault("vllm", {"propagate": True})
    vllm_logger["handlers"] = [*vllm_logger.get("handlers", []), "llm_init_capture"]
    configured = str(vllm_logger.get("level", "INFO")).upper()
    level = logging.getLevelName(configured)
    if not isinstance(level, int) or level > logging.INFO:
        vllm_logger["level"] = "INFO"  # the start-up timings are INFO records
    if MODEL_INFO_LOGGER not in loggers:
        # The model-info cache speaks at DEBUG; the filter above keeps the rest out.
        loggers[MODEL_INFO_LOGGER] = {"level": "DEBUG", "propagate": True}
    # vLLM's own handlers keep the level its logger had, whatever this capture lowers.
    for name in vllm_logger["handlers"][:-1]:
        config["handlers"].get(name, {}).setdefault("level", configured)
    return config


def _vllm_default_config(logging_config: Any) -> dict[str, Any]:
    """What vLLM applies without a config file (``vllm.logger._configure_vllm_root_logger``)."""
    import vllm.envs as envs
    from vllm.logger import DEFAULT_LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(DEFAULT_LOGGING_CONFIG)
    level = logging_config.log_level
    handler = config["handlers"]["vllm"]
    handler["level"] = level
    handler["stream"] = envs.VLLM_LOGGING_STREAM
    for formatter in config["formatters"].values():
        formatter["log_level"] = level
    if logging_config.formatter == "json":
        from vllm.logging_utils.formatter import JSON_FORMAT

        config["formatters"] = {"vllm_json": {
            "class": "pythonjsonlogger.jsonlogger.JsonFormatter", "format": JSON_FORMAT}}
        handler["formatter"] = "vllm_json"
    config["loggers"]["vllm"]["level"] = level
    return config


_TRACE_ENV = ("TRACEPARENT", "TRACESTATE")


@contextlib.contextmanager
def traceparent_env() -> Iterator[dict[str, str]]:
    """Put the current span's context into ``TRACEPARENT``/``TRACESTATE`` for the block, so that
    processes started inside continue the trace; restore the environment after."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    values = {name: carrier[name.lower()] for name in _TRACE_ENV if name.lower() in carrier}
    with environment(values, also_restore=_TRACE_ENV):
        yield {k: v for k, v in carrier.items() if k.upper() in _TRACE_ENV}


def _with_traceparent(fn: Callable[[], T]) -> T:
    with traceparent_env():
        return fn()
