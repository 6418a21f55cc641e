"""Running the download step alone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from llm_init import LLMConfig, NodeInitializationContext
from llm_init.steps.download import DownloadResult, DownloadStep


def run_step(step: DownloadStep, source: str | Path, *,
             local: str = "MODEL_AND_TOKENIZER") -> tuple[DownloadResult, list[dict[str, Any]]]:
    """Run ``step`` alone on a fresh context; return its result and its progress reports."""
    config = LLMConfig(model_id="tiny", model_source=str(source),
                       local_node_download_model=local)
    ctx = NodeInitializationContext.for_config("init-1", config)
    reports: list[dict[str, Any]] = []
    asyncio.run(step.run(ctx, lambda **details: reports.append(details)))
    result: DownloadResult = ctx.download_result
    return result, reports
