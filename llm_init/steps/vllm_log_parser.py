"""vLLM's start-up log lines, parsed: a table of timing lines to sub-phases, and its errors.

vLLM 0.32 exports no start-up metrics; it logs them. ``StartupParser`` is fed one ``LogLine``
at a time (from whichever process logged it) and returns the sub-phases that line finished.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llm_init.steps.vllm_cache_use import CacheUseParser
from llm_init.telemetry import names

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
