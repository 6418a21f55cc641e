"""The overlapped start (``LLMConfig.overlap_weights``): later phases run while weights arrive.

The download step announces, once the model's small files (config, tokenizer) are in place
and only its weight files are still arriving, where the model is (``WeightsOverlap.announce``).
The runtime then lets the placement group and engine phases start while the download phase
goes on; the engine step points vLLM at that directory with llm-init's load format
(``OVERLAP_LOAD_FORMAT``), whose loader takes each weight file as soon as it is complete
(``llm_init.steps.vllm_overlap``). The download phase still ends, and ``on_post_download``
still fires, when the download is complete; the runtime waits for it before
post-initialization.

The announcement travels in a context variable the runtime sets for the initialization's own
task (and the tasks it starts): the download step and the engine step of that initialization
see it, nothing else does. What happened is in the event log: the download step's
``StepProgressed(stage="downloading_weights")`` and ``DownloadOverlapped``.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from dataclasses import dataclass

OVERLAP_LOAD_FORMAT = "llm_init_overlap"
PLUGIN = "llm_init_overlap"  # the entry point in ``vllm.general_plugins`` that registers it
# Engine arguments whose load formats the overlap's loader stands in for: the default loader's.
OVERLAPPABLE_LOAD_FORMATS = frozenset({"auto", "safetensors", "hf", OVERLAP_LOAD_FORMAT})
WAIT_KEY = "llm_init_wait_s"  # model_loader_extra_config: seconds a shard may keep the engine
DEFAULT_WAIT_S = 1800.0


@dataclass(frozen=True, slots=True)
class WeightsArriving:
    """The local model directory whose small files are in place, weights still arriving."""

    model_dir: str


class WeightsOverlap:
    """One initialization's overlap: announced by the download step, read by the runtime and
    the engine step, all on the initialization's event loop."""

    def __init__(self) -> None:
        self.announced = asyncio.Event()
        self.download_done = asyncio.Event()
        self.arriving: WeightsArriving | None = None
        self.moved_on_at: float | None = None  # perf_counter when the later phases began
        self.finished_at: float | None = None  # perf_counter when the download phase ended

    def announce(self, arriving: WeightsArriving) -> None:
        """The engine may start: ``arriving.model_dir`` holds all but the weight files."""
        if self.arriving is None:
            self.arriving = arriving
            self.announced.set()

    def moved_on(self) -> None:
        self.moved_on_at = time.perf_counter()

    def finished(self) -> None:
        self.finished_at = time.perf_counter()
        self.download_done.set()

    def in_flight(self) -> WeightsArriving | None:
        """Where the engine should load from while the download still runs, else ``None``."""
        if self.moved_on_at is None or self.download_done.is_set():
            return None
        return self.arriving


_CURRENT: contextvars.ContextVar[WeightsOverlap | None] = contextvars.ContextVar(
    "llm_init_weights_overlap", default=None)


def current_overlap() -> WeightsOverlap | None:
    """This initialization's overlap, or ``None`` when ``overlap_weights`` is off."""
    return _CURRENT.get()


def use_overlap(overlap: WeightsOverlap | None) -> contextvars.Token[WeightsOverlap | None]:
    return _CURRENT.set(overlap)


def reset_overlap(token: contextvars.Token[WeightsOverlap | None]) -> None:
    _CURRENT.reset(token)
