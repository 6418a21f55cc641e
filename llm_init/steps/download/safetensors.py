"""The cheap structural check of a ``.safetensors`` file: header parses, data fills the file.

The cheap structural check of a ``.safetensors`` file: its header parses and its tensors'
data fills the file exactly.

The format: 8 bytes little-endian header length ``N``, ``N`` bytes of a JSON object mapping
tensor names to ``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets into the data
that follows the header) plus an optional ``__metadata__``, then the data. A truncated file, or
one overwritten in place by other bytes, fails this check while keeping a plausible size; the
engine would otherwise fail much later, or load garbage.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SUFFIX = ".safetensors"
METHOD = "safetensors-header"
# safetensors itself refuses headers above 100 MB.
MAX_HEADER_BYTES = 100_000_000
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
    "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}


def is_safetensors(path: str) -> bool:
    return path.lower().endswith(SUFFIX)


def header_problem(size: int, head: bytes) -> str | None:
    """What is wrong with a safetensors file of ``size`` bytes that starts with ``head`` (at
    least its first ``8 + header length`` bytes, when the file has them), or ``None``."""
    if size < 8:
        return f"{size} bytes is too short for a safetensors file (8-byte header length)"
    length = int.from_bytes(head[:8], "little")
    if length > min(MAX_HEADER_BYTES, size - 8):
        return (f"the safetensors header length is {length} bytes, but the file has only "
                f"{size} bytes (truncated or not a safetensors file)")
    try:
        header = json.loads(head[8:8 + length])
    except (UnicodeDecodeError, ValueError) as exc:
        return f"the safetensors header is not valid JSON ({exc})"
    if not isinstance(header, dict):
        return "the safetensors header is not a JSON object"
    data_size = size - 8 - length
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        problem, tensor_end = _tensor_problem(name, entry, data_size)
        if problem is not None:
            return problem
        end = max(end, tensor_end)
    if end != data_size:
        return (f"the tensors' data ends at byte {8 + length + end}, but the file has {size} "
                f"bytes")
    return None


def _tensor_problem(name: str, entry: Any, data_size: int) -> tuple[str | None, int]:
    offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        return f"tensor {name!r} has no valid data_offsets in the safetensors header", 0
    begin, end = offsets
    if end > data_size:
        return (f"tensor {name!r} ends at byte {end} of the data, but the file holds only "
                f"{data_size} bytes of data (truncated)"), 0
    dtype, shape = entry.get("dtype"), entry.get("shape")
    if dtype in DTYPE_BYTES and isinstance(shape, list) and all(
            isinstance(d, int) and d >= 0 for d in shape):
        expected = math.prod(shape) * DTYPE_BYTES[dtype]
        if expected != end - begin:
            return (f"tensor {name!r} ({dtype} {shape}) needs {expected} bytes, its "
                    f"data_offsets span {end - begin}"), 0
    return None, end


def file_problem(path: Path) -> str | None:
    """``header_problem`` of a file on disk: reads its header only."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        head = f.read(8)
        if len(head) == 8:
            length = int.from_bytes(head, "little")
            if length <= min(MAX_HEADER_BYTES, size - 8):
                head += f.read(length)
    return header_problem(size, head)


class SafetensorsHeader:
    """A verifier that parses a safetensors file's header from its first bytes as they are
    fetched and checks the tensors' offsets against the size that arrived."""

    method = METHOD

    def __init__(self) -> None:
        self._head = bytearray()
        self._wanted = 8
        self._size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._size += len(data)
        while (need := self._wanted - len(self._head)) > 0 and len(data):
            self._head += bytes(data[:need])
            data = data[need:]
            if self._wanted == 8 and len(self._head) == 8:
                length = int.from_bytes(self._head, "little")
                self._wanted = 8 + min(length, MAX_HEADER_BYTES + 1)

    def mismatch(self) -> str | None:
        return header_problem(self._size, bytes(self._head))
