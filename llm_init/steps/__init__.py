"""Default steps: the interface here; real Ray and vLLM steps in submodules, imported lazily."""

from __future__ import annotations

from llm_init.steps.base import DefaultStep, DefaultSteps, NotConfiguredStep, ProgressReporter
from llm_init.steps.ray_vllm import ray_vllm_steps

__all__ = ["DefaultStep", "DefaultSteps", "NotConfiguredStep", "ProgressReporter",
           "ray_vllm_steps"]
