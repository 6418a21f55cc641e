"""What vLLM did with its compile cache, read from its own log lines.

A restored artifact only puts files in place; whether vLLM used them shows in what it logs
while it starts (vLLM 0.32, ``vllm/compilation/decorators.py`` and ``backends.py``):

- ``Directly load AOT compilation from path P`` (INFO): the AOT-compiled model was loaded;
- ``Compiling model again due to a load failure from P, reason: R`` (WARNING): it was not (on
  the CPU build always, "'function' object has no attribute 'finalize_loading'");
- ``Directly load the compiled graph(s) for compile range R from the cache, took S s`` (INFO):
  inductor's graphs for one compile range came from the cache;
- ``Compiling a graph for compile range R takes S s`` (INFO): they were compiled;
- ``saved AOT compiled function to P`` (INFO): the model was compiled and its AOT artifact
  saved. vLLM 0.32's CPU build compiles the whole model as one AOT artifact and logs only
  this and the AOT lines above, no per-range ones;
- ``vLLM's torch.compile cache is disabled.`` (INFO);
- ``Loaded model info for class C from cache`` / ``Cache model info for class C miss``
  (DEBUG, ``vllm.model_executor.models.registry``): the model-info cache under ``modelinfos``.

The cache was used when the AOT artifact loaded; or when it was there but failed to load and
no graph had to be compiled afresh (vLLM logs the failure only when the file exists, and its
recompilation then reads inductor's cache in the same directory: the CPU build's warm start);
or when no graph was compiled at all. It was not used when vLLM compiled graphs, or found no
AOT artifact at its path and saved a new one (its cache key differed from the restored one's).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Values of ``CacheUse.aot``.
AOT_LOADED = "loaded"
AOT_FAILED = "failed"
AOT_ABSENT = "absent"  # vLLM logged neither: no AOT artifact was there to load

# The logger whose DEBUG records say whether the model-info cache was used.
MODEL_INFO_LOGGER = "vllm.model_executor.models.registry"

_AOT_LOADED = re.compile(r"Directly load AOT compilation from path (\S+)")
_AOT_FAILED = re.compile(r"Compiling model again due to a load failure from (.+?), reason: (.*)",
                         re.DOTALL)
_GRAPHS_LOADED = re.compile(r"Directly load the compiled graph\(s\) for compile range (.+?) "
                            r"from the cache")
_GRAPH_COMPILED = re.compile(r"Compiling a graph for compile range (.+?) takes [\d.]+ s")
_AOT_SAVED = re.compile(r"saved AOT compiled function to (\S+)")
_CACHE_DISABLED = re.compile(r"vLLM's torch\.compile cache is disabled")
_CACHE_DIRECTORY = re.compile(r"Using cache directory: (\S+) for vLLM's torch\.compile")
_MODEL_INFO_CACHED = re.compile(r"Loaded model info for class \S+ from cache")
_MODEL_INFO_MISSED = re.compile(r"Cache model info for class \S+ miss")
_REASON_MAX = 300


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheUse:
    """What vLLM did with its compile cache while it started.

    ``aot``: ``loaded``, ``failed`` (``aot_reason`` says why) or ``absent``; ``graphs_loaded``
    and ``graphs_compiled``: compile ranges whose graphs came from the cache or were compiled;
    ``compiled``: vLLM compiled the model and saved a new AOT artifact;
    ``model_info_cached``: the model-info cache was used (``None`` when vLLM did not say, its
    lines being DEBUG records); ``cache_disabled``: vLLM's compile cache was off;
    ``cache_dir``: the directory vLLM said it used."""

    aot: str = AOT_ABSENT
    aot_reason: str | None = None
    graphs_loaded: int = 0
    graphs_compiled: int = 0
    compiled: bool = False
    model_info_cached: bool | None = None
    cache_disabled: bool = False
    cache_dir: str | None = None

    @property
    def used(self) -> bool:
        """The cache saved vLLM its compilation (see the module's docs for the rule)."""
        if self.cache_disabled:
            return False
        if self.aot == AOT_LOADED:
            return True
        if self.graphs_compiled:
            return False
        return self.aot == AOT_FAILED or not self.compiled

    def describe(self) -> str:
        """One line for people: ``graphs loaded 1, AOT failed: <reason>``."""
        parts = []
        if self.cache_disabled:
            parts.append("compile cache disabled")
        if self.graphs_loaded:
            parts.append(f"graphs loaded {self.graphs_loaded}")
        if self.graphs_compiled:
            parts.append(f"graphs compiled {self.graphs_compiled}")
        if self.aot == AOT_FAILED:
            parts.append(f"AOT failed: {self.aot_reason}" if self.aot_reason else "AOT failed")
        elif self.aot == AOT_LOADED:
            parts.append("AOT loaded")
        elif self.compiled:
            parts.append("no AOT artifact at vLLM's path")
        if self.compiled:
            parts.append("model compiled")
        if self.model_info_cached is not None:
            parts.append("model info cached" if self.model_info_cached
                         else "model info inspected")
        return ", ".join(parts) or "nothing compiled"


class CacheUseParser:
    """Feeds on vLLM's log messages (first line of each) and keeps a ``CacheUse`` of them."""

    def __init__(self) -> None:
        self.seen = False  # any line about the compile or model-info cache
        self._aot = AOT_ABSENT
        self._aot_reason: str | None = None
        self._loaded = 0
        self._compiled = 0
        self._saved = False
        self._model_info: bool | None = None
        self._disabled = False
        self._cache_dir: str | None = None

    def feed(self, text: str) -> None:
        if (match := _AOT_LOADED.search(text)) is not None:
            self._aot, self._aot_reason = AOT_LOADED, None
        elif (match := _AOT_FAILED.search(text)) is not None:
            # A later successful load (another model of the engine) does not undo a failure.
            self._aot = AOT_FAILED
            self._aot_reason = match.group(2).strip().splitlines()[0][:_REASON_MAX] or None
        elif _GRAPHS_LOADED.search(text) is not None:
            self._loaded += 1
        elif _GRAPH_COMPILED.search(text) is not None:
            self._compiled += 1
        elif _AOT_SAVED.search(text) is not None:
            self._saved = True
        elif _CACHE_DISABLED.search(text) is not None:
            self._disabled = True
        elif (match := _CACHE_DIRECTORY.search(text)) is not None:
            self._cache_dir = match.group(1)
        elif _MODEL_INFO_CACHED.search(text) is not None:
            # One architecture inspected and another cached counts as inspected.
            self._model_info = self._model_info is not False
        elif _MODEL_INFO_MISSED.search(text) is not None:
            self._model_info = False
        else:
            return
        self.seen = True

    def result(self) -> CacheUse:
        return CacheUse(aot=self._aot, aot_reason=self._aot_reason, graphs_loaded=self._loaded,
                        graphs_compiled=self._compiled, compiled=self._saved,
                        model_info_cached=self._model_info,
                        cache_disabled=self._disabled, cache_dir=self._cache_dir)


def parse_cache_use(lines: list[str]) -> CacheUse:
    """``CacheUse`` of a sequence of vLLM log messages."""
    parser = CacheUseParser()
    for line in lines:
        parser.feed(line)
    return parser.result()


__all__ = ["AOT_ABSENT", "AOT_FAILED", "AOT_LOADED", "MODEL_INFO_LOGGER", "CacheUse",
           "CacheUseParser", "parse_cache_use"]
