"""Model-shaped directories of random bytes, named as Hugging Face checkpoints name files.

``write_model(path)`` writes config and tokenizer files (small JSON) and ``shards`` weight
files of ``shard_size`` bytes; it returns ``{relative path: size}``. The bytes are random, so
every test that compares files compares real content.
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
        files[name] = rng.randbytes(shard_size)
    if shards > 1:
        index = {"weight_map": {f"layer.{i}": n for i, n in enumerate(names)}}
        files["model.safetensors.index.json"] = json.dumps(index).encode()
    for name, size in (extra or {}).items():
        files[name] = rng.randbytes(size)
    for name, data in files.items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return {name: len(data) for name, data in files.items()}


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
