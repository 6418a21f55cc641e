"""Watching vLLM start: sub-phase timings and its own error message while blocking calls run.

``EngineStartWatch`` joins the parts: log records captured from this process and EngineCore
(``vllm_log_capture``), parsed into sub-phases and errors (``vllm_log_parser``), with the trace
context handed to the processes vLLM starts (``telemetry.propagation``). The names of those
modules stay importable from here.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from llm_init.steps.base import ProgressReporter
from llm_init.steps.vllm_cache_use import MODEL_INFO_LOGGER, CacheUse
from llm_init.steps.vllm_log_capture import (
    CAPTURED_LOGGERS,
    CaptureFilter,
    ChildLogCapture,
    QueueHandler,
    StartupLogFile,
)
from llm_init.steps.vllm_log_parser import (
    CUDA_GRAPH_CAPTURE,
    ENGINE_CONFIG,
    ENGINE_CORE_START,
    ENGINE_PROCESS_START,
    INIT_ENGINE,
    KV_CACHE_ALLOCATION_AND_WARMUP,
    KV_CACHE_PROFILING,
    MODEL_INIT,
    MODEL_LOADING,
    SERVING_INIT,
    TORCH_COMPILE,
    WEIGHT_LOADING,
    LogLine,
    StartupParser,
    Subphase,
    WeightLoad,
    root_cause,
)
from llm_init.telemetry.propagation import in_environment as traceparent_env

__all__ = [
    "CUDA_GRAPH_CAPTURE", "ENGINE_CONFIG", "ENGINE_CORE_START", "ENGINE_PROCESS_START",
    "INIT_ENGINE", "KV_CACHE_ALLOCATION_AND_WARMUP", "KV_CACHE_PROFILING", "MODEL_INIT",
    "MODEL_LOADING", "SERVING_INIT", "TORCH_COMPILE", "WEIGHT_LOADING", "CaptureFilter",
    "EngineStartError", "EngineStartWatch", "LogLine", "StartupLogFile", "StartupParser",
    "Subphase", "WeightLoad", "root_cause", "traceparent_env",
]

T = TypeVar("T")


class EngineStartError(RuntimeError):
    """vLLM failed to start; the message carries vLLM's own root cause when it logged one."""


class EngineStartWatch:
    """Collects vLLM's start-up records and reports sub-phases while blocking calls run in a
    thread, so the event loop stays free. Use as ``async with``; see ``call``."""

    def __init__(self, report: ProgressReporter, *, poll_s: float = 0.25) -> None:
        self.report = report
        self.poll_s = poll_s
        self.parser = StartupParser(time.time())
        self._lines: queue.SimpleQueue[LogLine] = queue.SimpleQueue()
        self._handler = QueueHandler(self._lines)
        self._children = ChildLogCapture(self._lines)
        self._model_info_level: int | None = None
        self._streamer_level: int | None = None
        self.children_captured = False

    @property
    def cache_use(self) -> CacheUse:
        """What vLLM did with its compile cache, from what it has logged so far."""
        return self.parser.cache.result()

    @property
    def cache_use_seen(self) -> bool:
        """Whether vLLM logged anything about its caches that this watch received."""
        return self.parser.cache.seen

    @property
    def weight_loads(self) -> list[WeightLoad]:
        """Each process's weight transfer that its log lines told of, so far."""
        return list(self.parser.weight_loads.values())

    async def __aenter__(self) -> EngineStartWatch:
        for name in CAPTURED_LOGGERS:
            logging.getLogger(name).addHandler(self._handler)
        streamer = logging.getLogger(CAPTURED_LOGGERS[1])
        if not streamer.isEnabledFor(logging.INFO):
            # Nothing else configures it: a streaming load in this process would go unheard.
            self._streamer_level = streamer.level
            streamer.setLevel(logging.INFO)
        model_info = logging.getLogger(MODEL_INFO_LOGGER)
        if not model_info.isEnabledFor(logging.DEBUG):
            # vLLM's own handlers keep their level, so only this watch sees the DEBUG records.
            self._model_info_level = model_info.level
            model_info.setLevel(logging.DEBUG)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        for name in CAPTURED_LOGGERS:
            logging.getLogger(name).removeHandler(self._handler)
        if self._streamer_level is not None:
            logging.getLogger(CAPTURED_LOGGERS[1]).setLevel(self._streamer_level)
        if self._model_info_level is not None:
            logging.getLogger(MODEL_INFO_LOGGER).setLevel(self._model_info_level)
        await asyncio.to_thread(self._children.join, 5.0)
        self._flush()
        self._children.remove()

    def capture_child_logs(self, vllm_config: Any) -> bool:
        """Make vLLM's EngineCore (and its workers) also log into a file this watch follows.
        Returns ``False`` (and changes nothing) when vLLM's logging configuration is switched
        off, or when engine cores run as Ray actors (data parallel over Ray)."""
        started_at = time.time()  # EngineCore starts with the next call
        if not self._children.start(vllm_config):
            return False
        self.parser.started_at = started_at
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
        self._children.read(final=True)  # what EngineCore logged up to now, its last record too
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


def _with_traceparent(fn: Callable[[], T]) -> T:
    with traceparent_env():
        return fn()
