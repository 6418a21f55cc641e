"""An artifact's manifest and archive: every file's size and SHA-256, checked before use.

An artifact's manifest and its archive: a tar of a cache directory, with every file's size
and SHA-256 and the archive's own, so a reader can tell a complete artifact from a torn or
corrupt one before it uses a byte of it."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from llm_init.errors import ArtifactError

FORMAT = 1
MANIFEST_NAME = "manifest.json"
_CHUNK = 1 << 20


class CorruptArtifactError(ArtifactError):
    """The archive or a file in it does not match its manifest; the message says which."""


class ManifestVersionError(ArtifactError):
    """The manifest is of a format this llm-init does not read."""


@dataclass(frozen=True, slots=True)
class ArtifactFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """What a complete artifact holds; written to the store after the archive it names."""

    key: str
    parts: Mapping[str, str]
    archive: str  # the archive's object name, relative to the key
    archive_bytes: int
    archive_sha256: str
    files: tuple[ArtifactFile, ...]
    created_at: float
    host: str = ""
    format: int = FORMAT
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """The unpacked size: the sum of the files' sizes."""
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        data = {"format": self.format, "key": self.key, "parts": dict(self.parts),
                "archive": self.archive, "archive_bytes": self.archive_bytes,
                "archive_sha256": self.archive_sha256, "created_at": self.created_at,
                "host": self.host, "extra": dict(self.extra),
                "files": [[f.path, f.size, f.sha256] for f in self.files]}
        return json.dumps(data, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            data = json.loads(raw)
            version = int(data["format"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptArtifactError(f"unreadable manifest: {exc!r}") from exc
        if version != FORMAT:
            raise ManifestVersionError(f"manifest format {version}, this llm-init reads {FORMAT}")
        try:
            manifest = cls(key=str(data["key"]), parts={str(k): str(v) for k, v in
                                                        data["parts"].items()},
                           archive=str(data["archive"]),
                           archive_bytes=int(data["archive_bytes"]),
                           archive_sha256=str(data["archive_sha256"]),
                           files=tuple(ArtifactFile(str(p), int(s), str(h))
                                       for p, s, h in data["files"]),
                           created_at=float(data["created_at"]),
                           host=str(data.get("host", "")),
                           extra=dict(data.get("extra") or {}))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptArtifactError(f"malformed manifest: {exc!r}") from exc
        for entry in manifest.files:
            if not _safe_path(entry.path) or entry.size < 0:
                raise CorruptArtifactError(f"the manifest lists {entry.path!r}, not a file "
                                           "inside the cache directory")
        if not _safe_path(manifest.archive) or "/" in manifest.archive \
                or manifest.archive_bytes < 0:
            raise CorruptArtifactError(f"the manifest names the archive {manifest.archive!r}")
        return manifest


def _safe_path(path: str) -> bool:
    """A relative ``/``-path of plain names: no ``.``, ``..``, empty or absolute parts."""
    parts = path.split("/")
    return bool(path) and all(p not in ("", ".", "..") and "\0" not in p for p in parts)


def scan(root: Path) -> list[Path]:
    """The regular files under ``root`` (symlinks and lock files left out), sorted."""
    found = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
             and not p.name.endswith(".lock")]
    return sorted(found)


def pack(root: Path, archive: Path) -> tuple[tuple[ArtifactFile, ...], int, str]:
    """Write the files under ``root`` into the tar ``archive``; return the files, the
    archive's size and its SHA-256."""
    files: list[ArtifactFile] = []
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in scan(root):
            name = path.relative_to(root).as_posix()
            try:
                source = path.open("rb")
            except FileNotFoundError:  # a temporary file the engine removed since the scan
                continue
            with source:
                info = tar.gettarinfo(fileobj=source, arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                # One read: the digest is of the very bytes the archive holds, even if the
                # file changes while it is packed.
                reader = _HashingReader(source)
                tar.addfile(info, reader)
            files.append(ArtifactFile(name, info.size, reader.digest.hexdigest()))
    return tuple(files), archive.stat().st_size, file_sha256(archive)


class _HashingReader:
    """A binary file whose reads also feed a SHA-256."""

    def __init__(self, source: BinaryIO) -> None:
        self.source = source
        self.digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.digest.update(data)
        return data


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for chunk in iter(lambda: source.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_archive(archive: Path, manifest: Manifest) -> None:
    size = archive.stat().st_size
    if size != manifest.archive_bytes:
        raise CorruptArtifactError(
            f"archive {manifest.archive} has {size} bytes, the manifest says "
            f"{manifest.archive_bytes}")
    digest = file_sha256(archive)
    if digest != manifest.archive_sha256:
        raise CorruptArtifactError(f"archive {manifest.archive} has SHA-256 {digest[:16]}..., "
                                   f"the manifest says {manifest.archive_sha256[:16]}...")


def unpack(archive: Path, manifest: Manifest, dest: Path, *, file_digests: bool = True) -> None:
    """Extract exactly the manifest's files into ``dest``, checking each one's size and (unless
    ``file_digests`` is off) its SHA-256, in the same pass that writes it; anything else in the
    archive (another path, a link, a device) is corruption, as is a sparse member (a few bytes
    of archive that unpack to many of disk). No file is written past its manifest size, so the
    unpacked total never exceeds the manifest's. The file digests are what a signature over the
    manifest vouches for, whatever archive bytes came with it."""
    expected = {f.path: f for f in manifest.files}
    seen: set[str] = set()
    with tarfile.open(archive, "r:") as tar:
        for member in tar:
            entry = expected.get(member.name)
            if entry is None or not member.isfile() or member.name in seen:
                raise CorruptArtifactError(f"unexpected entry {member.name!r} in the archive")
            if member.issparse() or member.size != entry.size:
                raise CorruptArtifactError(
                    f"entry {member.name!r} is {'sparse' if member.issparse() else 'sized'} "
                    f"unlike its manifest's {entry.size} bytes")
            target = dest.joinpath(*entry.path.split("/"))
            if not target.resolve().is_relative_to(dest.resolve()):
                raise CorruptArtifactError(f"entry {member.name!r} escapes the cache directory")
            source = tar.extractfile(member)
            if source is None:
                raise CorruptArtifactError(f"entry {member.name!r} has no data")
            target.parent.mkdir(parents=True, exist_ok=True)
            digest, size = hashlib.sha256() if file_digests else None, 0
            with target.open("wb") as out:
                while chunk := source.read(min(_CHUNK, entry.size + 1 - size)):
                    if digest is not None:
                        digest.update(chunk)
                    size += len(chunk)
                    if size > entry.size:
                        break
                    out.write(chunk)
            if size != entry.size or (digest is not None and digest.hexdigest() != entry.sha256):
                raise CorruptArtifactError(f"file {entry.path} does not match its manifest")
            os.utime(target, (member.mtime, member.mtime))
            seen.add(member.name)
    missing = expected.keys() - seen
    if missing:
        raise CorruptArtifactError(f"the archive lacks {len(missing)} file(s), e.g. "
                                   f"{sorted(missing)[0]}")
