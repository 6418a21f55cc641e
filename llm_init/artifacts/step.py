"""The warm-start restore step's old import path, kept for the names it exported.

Where the warm-start restore step lived before it joined the other default steps: its
names stay importable from here (see ``llm_init.steps.warm_start``)."""

from llm_init.steps.warm_start import (
    CONTEXT_KEY,
    PUBLISH_KEY,
    CapturePlan,
    WarmStartDownload,
    WarmStartEngine,
    capture_plan,
    restore_warm_start,
    with_warm_start,
)

__all__ = ["CONTEXT_KEY", "PUBLISH_KEY", "CapturePlan", "WarmStartDownload", "WarmStartEngine",
           "capture_plan", "restore_warm_start", "with_warm_start"]
