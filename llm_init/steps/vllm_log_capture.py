"""Capturing vLLM's log records across processes, as ``LogLine`` values in one queue.

The records come from two places: this process (``QueueHandler`` on the ``vllm`` logger while
the engine is built) and the EngineCore process ``AsyncLLM`` spawns, where the model loads.
That process configures logging from ``vllm_config.logging_config``; ``ChildLogCapture`` points
it at a logging configuration that keeps vLLM's own handlers and adds ``StartupLogFile``, a file
a thread here follows until the engine has started.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
from typing import Any

from llm_init.steps.vllm_cache_use import MODEL_INFO_LOGGER
from llm_init.steps.vllm_log_parser import LogLine

# Loggers whose INFO records the capture keeps: vLLM's, and the RunAI Model Streamer's (its
# throughput line is the only word on how fast a streaming load moved the weights).
CAPTURED_LOGGERS = ("vllm", "runai_model_streamer")
_RECORD_START = "\x1e"  # starts every record in the capture file; tracebacks span lines
_CAPTURE_MAX_BYTES = 8 * 1024 * 1024


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


class QueueHandler(logging.Handler):
    """This process's side of the capture: each record becomes a ``LogLine`` in ``sink``."""

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


class ChildLogCapture:
    """The EngineCore side, read from here: a logging configuration for vLLM's processes and a
    thread that follows the file they append to, putting each record into ``sink``."""

    def __init__(self, sink: queue.SimpleQueue[LogLine]) -> None:
        self.sink = sink
        self._dir: str | None = None
        self._file: str | None = None
        self._offset = 0
        self._buffer = ""
        self._stop = threading.Event()
        self._tail: threading.Thread | None = None
        self._file_lock = threading.Lock()

    def start(self, vllm_config: Any) -> bool:
        """Point ``vllm_config``'s logging at the capture file and follow it. Returns ``False``
        (and changes nothing) when vLLM's logging configuration is switched off, or when engine
        cores run as Ray actors (data parallel over Ray)."""
        logging_config = getattr(vllm_config, "logging_config", None)
        if logging_config is None or not logging_config.configure_logging:
            return False
        parallel = getattr(vllm_config, "parallel_config", None)
        if (getattr(parallel, "data_parallel_size", 1) > 1
                and getattr(parallel, "data_parallel_backend", "mp") == "ray"):
            # Engine cores then run as Ray actors, maybe on other nodes, where the logging
            # configuration file written here does not exist and vLLM would refuse to start.
            return False
        self._dir = tempfile.mkdtemp(prefix="llm-init-vllm-")
        self._file = os.path.join(self._dir, "vllm.log")
        open(self._file, "w").close()  # StartupLogFile writes only to a file that exists
        config_path = os.path.join(self._dir, "logging.json")
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(child_logging_config(logging_config, self._file), f)
        vllm_config.logging_config = dataclasses.replace(logging_config,
                                                         pylogging_config_file=config_path)
        self._tail = threading.Thread(target=self._follow, name="llm-init-vllm-logs",
                                      daemon=True)
        self._tail.start()
        return True

    def join(self, timeout_s: float) -> None:
        """Stop following (blocking: run it in a thread) and read what is left."""
        self._stop.set()
        if self._tail is not None:
            self._tail.join(timeout_s)
        self.read(final=True)

    def remove(self) -> None:
        """Delete the capture file: EngineCore's ``StartupLogFile`` sees it gone and stops."""
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def _follow(self) -> None:
        while not self._stop.wait(0.1):
            self.read(final=False)

    def read(self, *, final: bool) -> None:
        """Put the complete records written since the last read into ``sink``; ``final``:
        the last, unterminated one too."""
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
            line = parse_record(raw)
            if line is not None:
                self.sink.put(line)


def parse_record(raw: str) -> LogLine | None:
    """One record of the capture file (without its start mark) as a ``LogLine``."""
    parts = raw.rstrip("\n").split(" ", 3)
    if len(parts) < 4:
        return None
    try:
        created = float(parts[0])
    except ValueError:
        return None
    return LogLine(created, parts[1], parts[2], parts[3])


def child_logging_config(logging_config: Any, capture_file: str) -> dict[str, Any]:
    """vLLM's effective logging configuration plus a capped file handler on the captured
    loggers (``CAPTURED_LOGGERS``)."""
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
    for name in CAPTURED_LOGGERS[1:]:
        # Nothing else configures the streamer's logger: its INFO records would die at the
        # root logger's last-resort WARNING. Only the capture hears them.
        other = loggers.setdefault(name, {"propagate": True})
        other["handlers"] = [*other.get("handlers", []), "llm_init_capture"]
        other.setdefault("level", "INFO")
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
