"""An engine step for overlapped starts without vLLM: it does what llm-init's vLLM loader does
with the files (waits for each announced weight file's final, recorded version, then reads
it) and records when it began and what it saw."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_init import NodeInitializationContext
from llm_init.steps.download import arrival
from llm_init.steps.engine import merged_engine_kwargs, model_path_from, overlapped_model


@dataclass
class LoadingEngineStep:
    """Loads every announced weight file as it arrives; ``seen`` says what it started with."""

    wait_s: float = 30.0
    seen: dict[str, Any] = field(default_factory=dict)

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        kwargs = merged_engine_kwargs(ctx)
        model_dir = await overlapped_model(kwargs)
        self.seen.update(started_at=time.time(), overlapped=model_dir is not None,
                         download_result=ctx.download_result, kwargs=dict(kwargs))
        path = Path(model_dir or model_path_from(ctx.download_result) or "")
        self.seen["loaded"] = await asyncio.to_thread(self._load, path)
        ctx.engine = "engine-handle"

    def _load(self, model_dir: Path) -> dict[str, int]:
        planned = arrival.read_plan(model_dir)
        if planned is None:  # a sequential start: everything is in place
            return {p.name: len(p.read_bytes()) for p in model_dir.glob("*.safetensors")}
        return {f.path: len(arrival.wait_for_file(model_dir, f, timeout_s=self.wait_s)
                            .read_bytes()) for f in planned}


@dataclass
class AnnouncingDownload:
    """A download step that announces arriving weights at once, then after ``delay_s`` either
    fails with ``error`` or sets ``download_result``."""

    model_dir: str
    delay_s: float = 0.3
    error: Exception | None = None

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        from llm_init.overlap import WeightsArriving, current_overlap

        overlap = current_overlap()
        if overlap is not None:
            overlap.announce(WeightsArriving(self.model_dir))
        await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        ctx.download_result = {"path": self.model_dir}
