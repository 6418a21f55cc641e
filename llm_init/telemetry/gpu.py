"""GPU memory at phase boundaries, read through NVML (``nvidia-ml-py``, module ``pynvml``).

Without the package, the driver or a GPU, a sampler samples nothing, and the GPU series are
absent from the metrics: never zeros, never guesses.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

_log = logging.getLogger(__name__)


class GpuMemorySampler:
    """Used memory, in bytes, of each GPU visible to this process.

    Visible means listed in ``CUDA_VISIBLE_DEVICES`` (indices or ``GPU-`` UUID prefixes, as CUDA
    reads it; every GPU when unset). Each GPU is labelled with its NVML index, the numbering
    ``nvidia-smi`` and DCGM use, so series line up with the node's other GPU metrics.
    ``nvml`` is the ``pynvml`` module (tests pass a stand-in); imported on first use.
    """

    def __init__(self, nvml: Any | None = None, visible_devices: str | None = None) -> None:
        self._nvml: Any = nvml
        self._visible = (os.environ.get("CUDA_VISIBLE_DEVICES") if visible_devices is None
                         else visible_devices)
        self._devices: list[tuple[str, Any]] | None = None
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        return bool(self._open())

    def sample(self) -> list[tuple[str, int]]:
        """``(gpu label, used bytes)`` for each visible GPU; empty without GPUs."""
        devices = self._open()
        nvml = self._nvml
        out: list[tuple[str, int]] = []
        for label, handle in devices:
            try:
                out.append((label, int(nvml.nvmlDeviceGetMemoryInfo(handle).used)))
            except Exception as exc:  # a GPU fallen off the bus must not break the others
                _log.debug("NVML could not read the memory of GPU %s: %s", label, exc)
        return out

    def _open(self) -> list[tuple[str, Any]]:
        if self._devices is not None:
            return self._devices
        with self._lock:
            if self._devices is None:
                self._devices = self._discover()
        return self._devices

    def _discover(self) -> list[tuple[str, Any]]:
        try:
            if self._nvml is None:
                import pynvml

                self._nvml = pynvml
            nvml = self._nvml
            nvml.nvmlInit()
            devices = []
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = nvml.nvmlDeviceGetUUID(handle)
                uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
                devices.append((str(index), uuid, handle))
        except Exception as exc:
            _log.debug("no GPU memory metrics: NVML is not usable here (%s)", exc)
            return []
        return [(label, handle) for label, handle in _visible(devices, self._visible)]


def _visible(devices: list[tuple[str, str, Any]], spec: str | None
             ) -> list[tuple[str, Any]]:
    """The devices ``CUDA_VISIBLE_DEVICES`` selects, in its order (CUDA stops at the first entry
    it cannot resolve, and so do we)."""
    if spec is None:
        return [(index, handle) for index, _, handle in devices]
    chosen: list[tuple[str, Any]] = []
    for entry in (e.strip() for e in spec.split(",")):
        match = [d for d in devices
                 if (entry.isdigit() and d[0] == str(int(entry)))
                 or (entry.startswith("GPU-") and d[1].startswith(entry))]
        if len(match) != 1:
            break
        chosen.append((match[0][0], match[0][2]))
    return chosen


_default: GpuMemorySampler | None = None


def default_sampler() -> GpuMemorySampler:
    """The process's sampler: NVML is initialized once per process."""
    global _default
    if _default is None:
        _default = GpuMemorySampler()
    return _default
