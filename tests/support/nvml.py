"""A stand-in for the part of ``pynvml`` that llm-init uses, for machines without a GPU.

The one thing telemetry tests may fake is the GPU: ``StandInNvml(used=[1 << 30, 3 << 30])`` is a
node with two GPUs using 1 and 3 GiB; pass it to ``GpuMemorySampler(nvml=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace


class StandInNvml:
    """NVML for ``len(used)`` GPUs with UUIDs ``GPU-<index>0000000-...``."""

    def __init__(self, used: Sequence[int] = (1 << 30, 3 << 30)) -> None:
        self.used = list(used)
        self.initialized = False

    def uuid(self, index: int) -> str:
        return f"GPU-{index}0000000-aaaa-bbbb-cccc-dddddddddddd"

    def nvmlInit(self) -> None:
        self.initialized = True

    def nvmlDeviceGetCount(self) -> int:
        return len(self.used)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> bytes:
        return self.uuid(handle).encode()  # older pynvml returns bytes

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> SimpleNamespace:
        return SimpleNamespace(used=self.used[handle], total=80 << 30, free=0)
