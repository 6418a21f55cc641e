"""Publish a local cache directory as an artifact, and restore one into a local directory.

Neither raises for what the store or the artifact does: each returns an outcome saying what
happened and why, so that a warm start can only ever make an initialization faster.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tarfile
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from llm_init.artifacts.key import RUNTIME_PARTS, model_digest
from llm_init.artifacts.manifest import (
    MANIFEST_NAME,
    CorruptArtifactError,
    Manifest,
    ManifestVersionError,
    pack,
    scan,
    unpack,
    verify_archive,
)
from llm_init.artifacts.stores import ArtifactStore
from llm_init.telemetry.redaction import exception_message
from llm_init.text import printable

# Restore outcomes.
HIT = "hit"
MISS = "miss"
# Miss reasons.
NO_MATCH = "no_match"
CORRUPT = "corrupt"
VERSION_MISMATCH = "version_mismatch"
UNREACHABLE = "unreachable"
TIMEOUT = "timeout"
LOCAL_ERROR = "local_error"
# Publish outcomes.
PUBLISHED = "published"
SKIPPED = "skipped"
# Skip reasons.
EXISTS = "exists"
TOO_LARGE = "too_large"
EMPTY = "empty"
VETOED = "vetoed"
FAILED = "failed"

RESTORED_MARK = ".llm-init-restored"
# ``models/<model digest>/<key>.json``: the parts of every artifact of one model, so that a
# miss can name the nearest artifact and what differs (an upgraded vLLM, another max_model_len).
INDEX_PREFIX = "models"
MAX_CANDIDATES = 20  # index entries read to explain one miss
MAX_INDEX_PARTS = 64  # an index entry with more parts is not one this library wrote
MAX_SHOWN_CHARS = 120  # of one name or value read from the store, in a message


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreOutcome:
    """What a restore did: ``hit`` (with bytes and files) or ``miss`` with its reason."""

    result: str
    key: str
    reason: str | None = None
    message: str | None = None
    bytes: int = 0
    files: int = 0
    seconds: float = 0.0
    path: str | None = None  # the local cache directory the artifact is in
    created_by: str | None = None  # the host that published it
    nearest: str | None = None  # on a miss: the closest artifact of the same model
    differs: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # (nearest's, here)


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishOutcome:
    """What a publish did: ``published`` (bytes uploaded) or ``skipped`` with its reason."""

    result: str
    key: str
    reason: str | None = None
    message: str | None = None
    bytes: int = 0
    files: int = 0
    seconds: float = 0.0
    extra: Mapping[str, object] = field(default_factory=dict)


def manifest_name(key: str) -> str:
    return f"{key}/{MANIFEST_NAME}"


def index_name(parts: Mapping[str, str], key: str) -> str:
    return f"{INDEX_PREFIX}/{model_digest(parts)}/{key}.json"


@dataclass(frozen=True, slots=True)
class Nearest:
    """The artifact of the same model closest to the one looked for, and its differing parts
    as ``(theirs, ours)``."""

    key: str
    differs: Mapping[str, tuple[str, str]]

    @property
    def only_runtime(self) -> bool:
        return bool(self.differs) and all(k in RUNTIME_PARTS for k in self.differs)

    def describe(self, limit: int = 4) -> str:
        shown = [f"{k} {theirs or '(none)'} (here {ours or '(none)'})"
                 for k, (theirs, ours) in list(self.differs.items())[:limit]]
        more = len(self.differs) - limit
        return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def nearest_artifact(store: ArtifactStore, key: str, parts: Mapping[str, str]
                     ) -> Nearest | None:
    """The published artifact of the same model whose parts differ least from ``parts``;
    ``None`` when the store lists none (or cannot be read: the miss stays unexplained)."""
    try:
        names = store.list(f"{INDEX_PREFIX}/{model_digest(parts)}/")
    except Exception:
        return None
    best: Nearest | None = None
    for name in names[:MAX_CANDIDATES]:
        other = name.rpartition("/")[2].removesuffix(".json")
        if other == key:
            continue
        try:
            raw = json.loads(store.read(name) or b"null")
        except Exception:
            continue
        if not isinstance(raw, dict) or len(raw) > MAX_INDEX_PARTS:
            continue
        # Index entries are whatever the store holds: their names and values reach messages,
        # log lines and the terminal, so they are made one printable line each, and capped.
        other = printable(other, MAX_SHOWN_CHARS)
        theirs = {printable(k, MAX_SHOWN_CHARS): printable(v, MAX_SHOWN_CHARS)
                  for k, v in raw.items()}
        differs = {k: (str(theirs.get(k, "")), str(parts.get(k, "")))
                   for k in sorted(set(theirs) | set(parts))
                   if str(theirs.get(k, "")) != str(parts.get(k, ""))}
        if best is None or len(differs) < len(best.differs):
            best = Nearest(other, differs)
    return best


def _no_match(store: ArtifactStore, key: str, parts: Mapping[str, str],
              started: float) -> RestoreOutcome:
    nearest = nearest_artifact(store, key, parts)
    reason, message = NO_MATCH, f"no artifact {key} in {store.location}"
    if nearest is not None and nearest.only_runtime:
        reason = VERSION_MISMATCH
        message = (f"the artifact of this model and configuration, {nearest.key}, was made "
                   f"with other software or hardware: {nearest.describe()}")
    elif nearest is not None:
        message += f"; the nearest artifact of this model, {nearest.key}, differs in " \
                   f"{nearest.describe()}"
    return RestoreOutcome(result=MISS, key=key, reason=reason, message=message,
                          seconds=time.perf_counter() - started,
                          nearest=nearest.key if nearest else None,
                          differs=dict(nearest.differs) if nearest else {})


def _set_aside(store: ArtifactStore, key: str, raw: bytes, archive: str | None) -> bool:
    """Remove a damaged artifact's manifest (then its archive), so that the next publisher can
    replace it; only while the manifest is still the one found damaged (a repaired one is left
    alone)."""
    try:
        if store.read(manifest_name(key)) != raw:
            return False
        store.delete(manifest_name(key))
    except Exception:  # a read-only reader: the artifact stays, each start misses
        return False
    if archive:
        _delete_quietly(store, f"{key}/{archive}")
    return True


def restore(store: ArtifactStore, key: str, parts: Mapping[str, str], dest: Path, *,
            cancelled: Callable[[], bool] | None = None) -> RestoreOutcome:
    """Fetch the artifact ``key``, verify it and unpack it into ``dest``. Only a complete,
    verified artifact lands there, and nothing does once ``cancelled()`` is true."""
    started = time.perf_counter()

    def miss(reason: str, message: str) -> RestoreOutcome:
        return RestoreOutcome(result=MISS, key=key, reason=reason, message=message,
                              seconds=time.perf_counter() - started)

    try:
        raw = store.read(manifest_name(key))
    except Exception as exc:
        return miss(UNREACHABLE, exception_message(exc))
    if raw is None:
        return _no_match(store, key, parts, started)
    found = raw

    def damaged(message: str, archive: str | None = None) -> RestoreOutcome:
        if _set_aside(store, key, found, archive):
            message += "; set aside, so that this replica's publish replaces it"
        return miss(CORRUPT, message)

    try:
        manifest = Manifest.from_json(raw)
    except ManifestVersionError as exc:
        return miss(VERSION_MISMATCH, str(exc))
    except CorruptArtifactError as exc:
        return damaged(str(exc))
    differing = sorted(k for k in set(parts) | set(manifest.parts)
                       if parts.get(k) != manifest.parts.get(k))
    if manifest.key != key or differing:
        return miss(VERSION_MISMATCH, "the artifact was made for other "
                    + ", ".join(f"{k} ({manifest.parts.get(k)!r}, here {parts.get(k)!r})"
                                for k in differing[:4]))
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    except OSError as exc:
        return miss(LOCAL_ERROR, exception_message(exc))
    try:
        archive = staging / "artifact.tar"
        try:
            if not store.get(f"{key}/{manifest.archive}", archive):
                return damaged(f"the manifest names {manifest.archive}, which is missing")
        except Exception as exc:
            return miss(UNREACHABLE, exception_message(exc))
        tree = staging / "tree"
        tree.mkdir()
        try:
            verify_archive(archive, manifest)
            unpack(archive, manifest, tree)
        except (CorruptArtifactError, tarfile.TarError, EOFError, ValueError) as exc:
            return damaged(str(exc) or type(exc).__name__, manifest.archive)
        except OSError as exc:
            return miss(LOCAL_ERROR, exception_message(exc))
        (tree / RESTORED_MARK).write_text(key, encoding="utf-8")
        if cancelled is not None and cancelled():
            return miss(TIMEOUT, "cancelled before the files were put in place")
        try:
            _move_into(tree, dest)
        except OSError as exc:
            return miss(LOCAL_ERROR, exception_message(exc))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return RestoreOutcome(result=HIT, key=key, bytes=manifest.size, files=len(manifest.files),
                          seconds=time.perf_counter() - started, path=str(dest),
                          created_by=manifest.host or None)


def _move_into(tree: Path, dest: Path) -> None:
    """Put the verified files in place: the whole tree at once when ``dest`` is new or empty,
    else file by file (what vLLM left there is replaced by the artifact's version)."""
    if not dest.exists() or (dest.is_dir() and not any(dest.iterdir())):
        if dest.exists():
            dest.rmdir()
        os.replace(tree, dest)
        return
    for path in sorted(tree.rglob("*")):
        if path.is_file():
            target = dest / path.relative_to(tree)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)


def publish(store: ArtifactStore, key: str, parts: Mapping[str, str], source: Path, *,
            max_bytes: int | None = None,
            extra: Mapping[str, object] | None = None) -> PublishOutcome:
    """Publish the files under ``source`` as the artifact ``key``: the archive under a name of
    its own first, the manifest last and only if none exists. A complete artifact is never
    replaced; of two publishers at once, one manifest wins and the other removes its archive;
    a publisher that dies before its manifest leaves nothing a reader takes."""
    started = time.perf_counter()

    def skipped(reason: str, message: str, nbytes: int = 0, files: int = 0) -> PublishOutcome:
        return PublishOutcome(result=SKIPPED, key=key, reason=reason, message=message,
                              bytes=nbytes, files=files, seconds=time.perf_counter() - started)

    try:
        if store.read(manifest_name(key)) is not None:
            return skipped(EXISTS, f"artifact {key} is already in {store.location}")
    except Exception as exc:
        return skipped(FAILED, exception_message(exc))
    files = [p for p in scan(source) if p.name != RESTORED_MARK] if source.is_dir() else []
    total = sum(p.stat().st_size for p in files)
    if not files:
        return skipped(EMPTY, f"nothing cached under {source}")
    if max_bytes is not None and total > max_bytes:
        return skipped(TOO_LARGE, f"{total} bytes cached, over the cap of {max_bytes}",
                       total, len(files))
    archive_name = f"data-{uuid.uuid4().hex}.tar"
    with tempfile.TemporaryDirectory(prefix="llm-init-artifact-") as tmp:
        archive = Path(tmp) / archive_name
        try:
            packed, archive_bytes, archive_sha256 = pack(source, archive)
            manifest = Manifest(key=key, parts=dict(parts), archive=archive_name,
                                archive_bytes=archive_bytes, archive_sha256=archive_sha256,
                                files=packed, created_at=time.time(),
                                host=socket.gethostname(), extra=dict(extra or {}))
            store.put(f"{key}/{archive_name}", archive)
        except Exception as exc:
            _delete_quietly(store, f"{key}/{archive_name}")
            return skipped(FAILED, exception_message(exc), total, len(files))
    try:
        created = store.put_new(manifest_name(key), manifest.to_json())
    except Exception as exc:
        _delete_quietly(store, f"{key}/{archive_name}")
        return skipped(FAILED, exception_message(exc), total, len(files))
    if not created:
        _delete_quietly(store, f"{key}/{archive_name}")
        return skipped(EXISTS, f"another publisher completed artifact {key} first",
                       total, len(files))
    with contextlib.suppress(Exception):  # the index only explains misses: best effort
        store.put_new(index_name(parts, key), json.dumps(dict(parts), sort_keys=True).encode())
    return PublishOutcome(result=PUBLISHED, key=key, bytes=manifest.archive_bytes,
                          files=len(packed), seconds=time.perf_counter() - started)


def _delete_quietly(store: ArtifactStore, name: str) -> None:
    # An orphaned archive without a manifest is never read; cleaning up is a courtesy.
    with contextlib.suppress(Exception):
        store.delete(name)
