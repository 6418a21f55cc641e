"""Specification of the NVML sampler: which GPUs are visible, and nothing without a GPU."""

from __future__ import annotations

import pytest

from llm_init.telemetry.gpu import GpuMemorySampler
from tests.support.nvml import StandInNvml

GIB = 1 << 30


def test_this_machine_without_a_gpu_samples_nothing() -> None:
    """With the real ``pynvml`` and no NVIDIA driver, there is nothing to sample."""
    sampler = GpuMemorySampler()
    assert (sampler.available, sampler.sample()) == (False, [])


@pytest.mark.parametrize(("visible", "expected"), [
    (None, [("0", 1 * GIB), ("1", 2 * GIB), ("2", 3 * GIB)]),
    ("2,0", [("2", 3 * GIB), ("0", 1 * GIB)]),
    ("GPU-10000000", [("1", 2 * GIB)]),
    ("1,7,0", [("1", 2 * GIB)]),  # CUDA stops at the first device it cannot resolve
    ("", []),
    ("-1", []),
])
def test_visible_gpus_follow_cuda_visible_devices(visible: str | None,
                                                  expected: list[tuple[str, int]]) -> None:
    """Indices and UUID prefixes select GPUs in their order; each keeps its NVML index."""
    sampler = GpuMemorySampler(StandInNvml([1 * GIB, 2 * GIB, 3 * GIB]), visible_devices=visible)
    assert sampler.sample() == expected


def test_nvml_is_initialized_once_per_sampler() -> None:
    """Discovery runs on first use only; later samples read memory alone."""
    nvml = StandInNvml([GIB])
    sampler = GpuMemorySampler(nvml, visible_devices=None)
    sampler.sample()
    nvml.used[0] = 2 * GIB
    nvml.initialized = False
    assert (sampler.sample(), nvml.initialized) == ([("0", 2 * GIB)], False)
