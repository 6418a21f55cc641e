"""vLLM's start-up log lines, parsed: a table of timing lines to sub-phases, and its errors.

vLLM 0.32 exports no start-up metrics; it logs them. ``StartupParser`` is fed one ``LogLine``
at a time (from whichever process logged it) and returns the sub-phases that line finished; it
also keeps each process's weight transfer (``WeightLoad``): vLLM's "Loading weights took X
seconds", or, with ``load_format=runai_streamer`` (which logs no such line), the RunAI Model
Streamer's "Overall time to stream SIZE of all files to DEVICE: Xs, RATE/s".
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
# The RunAI Model Streamer's summary of one streaming load (its own logger, not vLLM's). SIZE
# and RATE are rounded by ``humanize.naturalsize(..., binary=True)``: "1.1 MiB", "8 Bytes".
_STREAMED = re.compile(r"\[RunAI Streamer\] Overall time to stream ([\d.]+ \w+) of all files "
                       r"to \S+: ([\d.]+)s")
_BINARY_UNITS = {"byte": 1, "bytes": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
                 "tib": 1 << 40, "pib": 1 << 50}
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
    source: str  # "vllm_log" | "streamer_log" | "derived" | "measured"
    process: str


@dataclass(frozen=True, slots=True)
class WeightLoad:
    """One process's (one worker's) weight transfer, as its log said: ``seconds`` ending at
    ``ended_at`` (a Unix time), from vLLM's line or the streamer's (``source``).
    ``reported_bytes``: the streamer's own size, rounded as it prints it."""

    process: str
    seconds: float
    ended_at: float
    source: str  # "vllm_log" | "streamer_log"
    reported_bytes: int | None = None


class StartupParser:
    """Turns vLLM's start-up log lines into sub-phase timings and remembers its errors."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.errors: list[str] = []
        self.cache = CacheUseParser()
        self._kv_sized_at: float | None = None
        self._core_seen = False
        # Per process: its weight transfer, and when it logged "Initializing model took"
        # (the weights load right after it: a finer clock than the lines' two decimals).
        self.weight_loads: dict[str, WeightLoad] = {}
        self._model_built_at: dict[str, float] = {}

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
        streamed = _STREAMED.search(first)
        if streamed is not None:
            found.extend(self._weights(line, float(streamed.group(2)), "streamer_log",
                                       parse_binary_size(streamed.group(1))))
        for name, pattern in _RULES:
            match = pattern.search(first)
            if match is None:
                continue
            seconds = float(match.group(1))
            if name == MODEL_INIT:
                self._model_built_at.setdefault(line.process, line.created)
            if name == WEIGHT_LOADING:
                found.extend(self._weights(line, seconds, "vllm_log", None))
                continue
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

    def _weights(self, line: LogLine, seconds: float, source: str,
                 reported_bytes: int | None) -> list[Subphase]:
        """The ``weight_loading`` sub-phase, once per process: the streamer's line, when a
        process logs both, is the transfer itself."""
        if seconds == 0.0 and line.process in self._model_built_at:
            # Below the line's two decimals: the clock between vLLM's two records is finer.
            seconds = max(0.0, line.created - self._model_built_at[line.process])
        known = self.weight_loads.get(line.process)
        if known is not None and (known.source == "streamer_log" or source != "streamer_log"):
            return []
        self.weight_loads[line.process] = WeightLoad(line.process, seconds, line.created,
                                                     source, reported_bytes)
        if known is not None:
            return []  # the sub-phase was reported from vLLM's line already
        return [Subphase(WEIGHT_LOADING, seconds, source, line.process)]


def parse_binary_size(text: str) -> int | None:
    """``humanize.naturalsize(n, binary=True)`` read back ("1.1 MiB", "8 Bytes"), rounded as
    it was printed; ``None`` for anything else."""
    number, _, unit = text.strip().partition(" ")
    factor = _BINARY_UNITS.get(unit.lower())
    try:
        return round(float(number) * factor) if factor is not None else None
    except ValueError:
        return None


def root_cause(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) > 1 and any(ln.startswith("Traceback") for ln in lines):
        return lines[-1]
    return lines[0] if lines else text
