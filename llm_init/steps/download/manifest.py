"""``.llm-init/manifest.json``: the full listing a model directory was fetched from.

It lets a node answer offline (``HF_HUB_OFFLINE``) which files a revision has and which are in
place, without asking the source.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

from llm_init.steps.download.checksums import Checksum, SizeOnly, Verifier
from llm_init.steps.download.errors import OfflineCacheMissError
from llm_init.steps.download.sources import (
    STATE_DIR,
    Listing,
    RemoteFile,
    SourceSpec,
)

MANIFEST = "manifest.json"


def write_manifest(dest: Path, spec: SourceSpec, listing: Listing) -> None:
    """Record ``listing`` (every file of the source, fetched or not) atomically."""
    data = {
        "source": spec.uri,
        "revision": listing.revision,
        "files": [{"path": f.path, "size": f.size, "version": f.version,
                   "checksum": None if f.checksum is None else {
                       "algorithm": f.checksum.algorithm, "value": f.checksum.value,
                       "parts": f.checksum.parts}}
                  for f in listing.files],
    }
    path = dest / STATE_DIR / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(dest: Path) -> Listing | None:
    """The listing recorded in ``dest``, or ``None`` if there is none (or it is unreadable)."""
    try:
        data = json.loads((dest / STATE_DIR / MANIFEST).read_text(encoding="utf-8"))
        return Listing(tuple(_file(f) for f in data["files"]), data.get("revision"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _file(entry: dict[str, Any]) -> RemoteFile:
    checksum = entry.get("checksum")
    return RemoteFile(entry["path"], int(entry["size"]), entry["version"],
                      None if checksum is None else Checksum(**checksum))


class ManifestSource:
    """A source answered from a manifest alone: files already in place are complete, any
    other is an offline cache miss naming the file."""

    def __init__(self, spec: SourceSpec, listing: Listing, cache_name: str) -> None:
        self.spec = spec
        self._listing = listing
        self._cache_name = cache_name

    @property
    def cache_name(self) -> str:
        return self._cache_name

    def listing(self) -> Listing:
        return self._listing

    def verifier(self, file: RemoteFile) -> Verifier:
        return SizeOnly()

    def read(self, file: RemoteFile, start: int, chunk_size: int) -> Generator[bytes]:
        raise OfflineCacheMissError(
            f"HF_HUB_OFFLINE is set and {self.spec.uri}: {file.path} is not in the llm-init "
            f"cache; unset it to download")
        yield b""  # a generator, like every source's read
