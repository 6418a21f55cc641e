"""Model-shaped directories of random bytes, named as Hugging Face checkpoints name files.

``write_model(path)`` writes config and tokenizer files (small JSON) and ``shards`` weight
files of ``shard_size`` bytes; it returns ``{relative path: size}``. The bytes are random, so
every test that compares files compares real content; ``.safetensors`` files are well-formed
(a header describing one ``U8`` tensor of random bytes that fills the file).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

TOKENIZER_FILES = ("config.json", "generation_config.json", "tokenizer.json",
                   "tokenizer_config.json", "special_tokens_map.json")


def write_model(path: Path, *, shards: int = 2, shard_size: int = 256 * 1024,
                extra: dict[str, int] | None = None, seed: int = 0) -> dict[str, int]:
    """Write a model into ``path``; ``extra`` adds files of random bytes (name -> size)."""
    rng = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    files: dict[str, bytes] = {}
    for name in TOKENIZER_FILES:
        files[name] = json.dumps({"name": name, "salt": rng.getrandbits(64)}).encode()
    names = [f"model-{i + 1:05d}-of-{shards:05d}.safetensors" for i in range(shards)]
    if shards == 1:
        names = ["model.safetensors"]
    for name in names:
        files[name] = safetensors_bytes(rng, shard_size)
    if shards > 1:
        index = {"weight_map": {f"layer.{i}": n for i, n in enumerate(names)}}
        files["model.safetensors.index.json"] = json.dumps(index).encode()
    for name, size in (extra or {}).items():
        files[name] = (safetensors_bytes(rng, size) if name.endswith(".safetensors")
                       else rng.randbytes(size))
    for name, data in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return {name: len(data) for name, data in files.items()}


def safetensors_bytes(rng: random.Random, size: int) -> bytes:
    """A well-formed safetensors file of exactly ``size`` bytes: one ``U8`` tensor of random
    bytes (the header is padded with spaces, as the format allows, to hit the size)."""
    for digits in range(1, 21):
        data_size = size - 8 - 80 - digits
        header = json.dumps({"weight": {"dtype": "U8", "shape": [data_size],
                                        "data_offsets": [0, data_size]}}).encode()
        padding = size - 8 - data_size - len(header)
        if data_size >= 0 and padding >= 0 and len(str(data_size)) == digits:
            header += b" " * padding
            return len(header).to_bytes(8, "little") + header + rng.randbytes(data_size)
    raise ValueError(f"{size} bytes is too small for a safetensors file")


def weight_files(files: dict[str, int]) -> set[str]:
    """The weight files among ``files``."""
    return {n for n in files if n.endswith((".safetensors", ".bin"))}


def read_tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` (hidden directories excluded) by relative path."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            full = Path(dirpath, name)
            out[full.relative_to(path).as_posix()] = full.read_bytes()
    return out
