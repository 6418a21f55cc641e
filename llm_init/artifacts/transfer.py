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
from enum import StrEnum
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
from llm_init.artifacts.signing import (
    Signer,
    TrustedKeys,
    UntrustedArtifactError,
    signature_name,
)
from llm_init.artifacts.stores import (
    ArtifactDeniedError,
    ArtifactStore,
    ArtifactTooLargeError,
)
from llm_init.telemetry.redaction import exception_message
from llm_init.text import printable


class RestoreResult(StrEnum):
    """What a restore did."""

    HIT = "hit"
    MISS = "miss"


class MissReason(StrEnum):
    """Why a restore missed; the first four mean nothing usable is there, the rest that the
    store, the artifact or this node failed (``llm_init_artifact_cache_total{result="error"}``
    counts those, see ``names.ARTIFACT_ERROR_REASONS``)."""

    NO_MATCH = "no_match"
    VERSION_MISMATCH = "version_mismatch"
    TOO_LARGE = "too_large"  # the artifact is over the restore's max_bytes
    DISABLED = "disabled"  # artifact_store.restore is off
    CORRUPT = "corrupt"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    LOCAL_ERROR = "local_error"
    DENIED = "denied"  # the store refused access (S3 AccessDenied/403, a file's permissions)
    UNTRUSTED = "untrusted"  # unsigned, or not signed by a trusted key: never unpacked


class PublishResult(StrEnum):
    """What a publish did."""

    PUBLISHED = "published"
    SKIPPED = "skipped"


class SkipReason(StrEnum):
    """Why a publish was skipped."""

    EXISTS = "exists"
    TOO_LARGE = "too_large"
    EMPTY = "empty"
    VETOED = "vetoed"
    FAILED = "failed"
    UNSIGNED = "unsigned"  # readers require signatures and this publisher holds no trusted key


# The members under their short names, as they were before they had enums.
HIT, MISS = RestoreResult.HIT, RestoreResult.MISS
NO_MATCH, CORRUPT = MissReason.NO_MATCH, MissReason.CORRUPT
VERSION_MISMATCH, UNREACHABLE = MissReason.VERSION_MISMATCH, MissReason.UNREACHABLE
TIMEOUT, LOCAL_ERROR, DENIED = MissReason.TIMEOUT, MissReason.LOCAL_ERROR, MissReason.DENIED
UNTRUSTED, DISABLED = MissReason.UNTRUSTED, MissReason.DISABLED
PUBLISHED, SKIPPED = PublishResult.PUBLISHED, PublishResult.SKIPPED
EXISTS, TOO_LARGE, EMPTY = SkipReason.EXISTS, SkipReason.TOO_LARGE, SkipReason.EMPTY
VETOED, FAILED, UNSIGNED = SkipReason.VETOED, SkipReason.FAILED, SkipReason.UNSIGNED

RESTORED_MARK = ".llm-init-restored"
# ``models/<model digest>/<key>.json``: the parts of every artifact of one model, so that a
# miss can name the nearest artifact and what differs (an upgraded vLLM, another max_model_len).
INDEX_PREFIX = "models"
MAX_CANDIDATES = 20  # index entries read to explain one miss
# What is read from the store before it is parsed: store content is untrusted, and a
# manifest of a real cache (thousands of files) is well under a MiB.
MAX_MANIFEST_BYTES = 16 * 1024**2
MAX_INDEX_ENTRY_BYTES = 64 * 1024
MAX_SIGNATURE_BYTES = 64 * 1024
# A staging directory of a restore is ``.<dest name>.<pid>.<random>``; one whose process is
# gone, or older than this, was left by a restore that died (SIGKILL, a node's power).
STALE_STAGING_S = 3600.0
MAX_INDEX_PARTS = 64  # an index entry with more parts is not one this library wrote
MAX_SHOWN_CHARS = 120  # of one name or value read from the store, in a message


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreOutcome:
    """What a restore did: ``hit`` (with bytes and files) or ``miss`` with its reason."""

    result: RestoreResult
    key: str
    reason: MissReason | None = None
    message: str | None = None
    bytes: int = 0
    files: int = 0
    seconds: float = 0.0
    path: str | None = None  # the local cache directory the artifact is in
    created_by: str | None = None  # the host that published it
    nearest: str | None = None  # on a miss: the closest artifact of the same model
    differs: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # (nearest's, here)
    signed_by: str | None = None  # on a hit: the id of the key whose signature verified


@dataclass(frozen=True, slots=True, kw_only=True)
class PublishOutcome:
    """What a publish did: ``published`` (bytes uploaded) or ``skipped`` with its reason."""

    result: PublishResult
    key: str
    reason: SkipReason | None = None
    message: str | None = None
    bytes: int = 0
    files: int = 0
    seconds: float = 0.0
    extra: Mapping[str, object] = field(default_factory=dict)
    signed_by: str | None = None  # the id of the key that signed the manifest


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
            raw = json.loads(store.read(name, max_bytes=MAX_INDEX_ENTRY_BYTES) or b"null")
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
    reason: MissReason = NO_MATCH
    message = f"no artifact {key} in {store.location}"
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
        if store.read(manifest_name(key), max_bytes=MAX_MANIFEST_BYTES) != raw:
            return False
        store.delete(manifest_name(key))
    except Exception:  # a read-only reader: the artifact stays, each start misses
        return False
    _delete_quietly(store, signature_name(key, raw))
    if archive:
        _delete_quietly(store, f"{key}/{archive}")
    return True


def _signature(store: ArtifactStore, key: str, raw: bytes) -> bytes | None:
    """The signature object of the manifest ``raw``; an oversized one reads as no signature
    (untrusted), never as a store failure."""
    try:
        return store.read(signature_name(key, raw), max_bytes=MAX_SIGNATURE_BYTES)
    except ArtifactTooLargeError:
        return None


def _replace_untrusted(store: ArtifactStore, key: str, raw: bytes, trust: TrustedKeys) -> bool:
    """Remove a manifest no trusted key signed (an artifact from before signing, or a
    forger's), so that a publisher holding a trusted key can complete a sound artifact; the
    archive it names is left alone, as a forged manifest may name a sound one."""
    try:
        trust.verify(raw, _signature(store, key, raw))
        return False
    except UntrustedArtifactError:
        pass
    try:
        if store.read(manifest_name(key)) != raw:
            return False
        store.delete(manifest_name(key))
    except Exception:
        return False
    _delete_quietly(store, signature_name(key, raw))
    return True


def restore(store: ArtifactStore, key: str, parts: Mapping[str, str], dest: Path, *,
            cancelled: Callable[[], bool] | None = None,
            max_bytes: int | None = None,
            trust: TrustedKeys | None = None) -> RestoreOutcome:
    """Fetch the artifact ``key``, verify it and unpack it into ``dest``. Only a complete,
    verified artifact lands there, and nothing does once ``cancelled()`` is true. With
    ``trust``, the manifest's signature is checked before anything else is read. An artifact
    whose archive or files are over ``max_bytes`` is a ``too_large`` miss, found from its
    manifest before a byte of the archive is fetched."""
    started = time.perf_counter()

    def miss(reason: MissReason, message: str) -> RestoreOutcome:
        return RestoreOutcome(result=MISS, key=key, reason=reason, message=message,
                              seconds=time.perf_counter() - started)

    remove_stale_staging(dest)
    try:
        raw = store.read(manifest_name(key), max_bytes=MAX_MANIFEST_BYTES)
    except Exception as exc:
        return miss(_store_reason(exc), exception_message(exc))
    if raw is None:
        return _no_match(store, key, parts, started)
    found, signed_by = raw, None
    if trust is not None:
        try:
            signed_by = trust.verify(raw, _signature(store, key, raw))
        except UntrustedArtifactError as exc:
            return miss(UNTRUSTED, f"artifact {key}: {exc}")
        except Exception as exc:
            return miss(_store_reason(exc), exception_message(exc))
    # Only an artifact a trusted key signed may be set aside: a forger must not be able to
    # have readers delete what a sound manifest names.
    may_set_aside = trust is None or signed_by is not None

    def damaged(message: str, archive: str | None = None) -> RestoreOutcome:
        if may_set_aside and _set_aside(store, key, found, archive):
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
    largest = max(manifest.archive_bytes, manifest.size)
    if max_bytes is not None and largest > max_bytes:
        return miss(MissReason.TOO_LARGE, f"artifact {key} holds {largest} bytes, over the "
                    f"restore's cap of {max_bytes} (max_bytes)")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{os.getpid()}.",
                                        dir=dest.parent))
    except OSError as exc:
        return miss(LOCAL_ERROR, exception_message(exc))
    try:
        archive = staging / "artifact.tar"
        try:
            # Never more than the manifest says: a larger archive is damaged, and found so
            # at its manifest's size, not after filling the disk.
            if not store.get(f"{key}/{manifest.archive}", archive,
                             max_bytes=manifest.archive_bytes):
                return damaged(f"the manifest names {manifest.archive}, which is missing")
        except ArtifactTooLargeError as exc:
            return damaged(f"archive {manifest.archive} is larger than its manifest's "
                           f"{manifest.archive_bytes} bytes ({exc})", manifest.archive)
        except OSError as exc:  # the local disk (a store's own failures are not OSErrors)
            return miss(LOCAL_ERROR, exception_message(exc))
        except Exception as exc:
            return miss(_store_reason(exc), exception_message(exc))
        if cancelled is not None and cancelled():
            return miss(TIMEOUT, "cancelled after the archive was fetched")
        tree = staging / "tree"
        tree.mkdir()
        try:
            verify_archive(archive, manifest)
            unpack(archive, manifest, tree, file_digests=True)
        except (CorruptArtifactError, tarfile.TarError, EOFError, ValueError) as exc:
            return damaged(str(exc) or type(exc).__name__, manifest.archive)
        except OSError as exc:
            return miss(LOCAL_ERROR, exception_message(exc))
        try:
            (tree / RESTORED_MARK).write_text(key, encoding="utf-8")
        except OSError as exc:
            return miss(LOCAL_ERROR, exception_message(exc))
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
                          created_by=manifest.host or None, signed_by=signed_by)


def _store_reason(exc: BaseException) -> MissReason:
    """The miss reason of a failed read from the store."""
    if isinstance(exc, ArtifactDeniedError | PermissionError):
        return DENIED
    if isinstance(exc, ArtifactTooLargeError):
        return MissReason.TOO_LARGE
    return UNREACHABLE


def remove_stale_staging(dest: Path, *, stale_after_s: float = STALE_STAGING_S) -> list[Path]:
    """Remove the staging directories of restores into ``dest`` that died before cleaning
    up: their process is gone from this host, or they are older than ``stale_after_s``.
    Return what was removed; never raises."""
    removed: list[Path] = []
    prefix = f".{dest.name}."
    try:
        candidates = [p for p in dest.parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    now = time.time()
    for path in candidates:
        pid_text = path.name[len(prefix):].partition(".")[0]
        try:
            if not path.is_dir() or path.is_symlink():
                continue
            old = now - path.stat().st_mtime > stale_after_s
        except OSError:
            continue
        pid = int(pid_text) if pid_text.isdigit() else None
        if pid == os.getpid():
            continue  # another thread of this process restoring: alive by definition
        if old or (pid is not None and not _pid_alive(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


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
            max_bytes: int | None = None, extra: Mapping[str, object] | None = None,
            signer: Signer | None = None, trust: TrustedKeys | None = None) -> PublishOutcome:
    """Publish the files under ``source`` as the artifact ``key``: the archive under a name of
    its own first, the manifest last and only if none exists. A complete artifact is never
    replaced; of two publishers at once, one manifest wins and the other removes its archive;
    a publisher that dies before its manifest leaves nothing a reader takes. With ``signer``
    the manifest's signature is written before the manifest; with ``trust`` requiring
    signatures, a publisher without a trusted key publishes nothing, and one with a trusted
    key replaces an artifact no trusted key signed. Never raises: whatever goes wrong is a
    ``skipped`` outcome with reason ``failed``."""
    started = time.perf_counter()
    try:
        return _publish(store, key, parts, source, started, max_bytes, extra, signer, trust)
    except Exception as exc:
        return PublishOutcome(result=SKIPPED, key=key, reason=FAILED,
                              message=exception_message(exc),
                              seconds=time.perf_counter() - started)


def _publish(store: ArtifactStore, key: str, parts: Mapping[str, str], source: Path,
             started: float, max_bytes: int | None, extra: Mapping[str, object] | None,
             signer: Signer | None, trust: TrustedKeys | None) -> PublishOutcome:
    def skipped(reason: SkipReason, message: str, nbytes: int = 0, files: int = 0
                ) -> PublishOutcome:
        return PublishOutcome(result=SKIPPED, key=key, reason=reason, message=message,
                              bytes=nbytes, files=files, seconds=time.perf_counter() - started)

    if trust is not None and trust.required and (signer is None
                                                 or signer.key_id not in trust.keys):
        return skipped(UNSIGNED, "readers require signatures by trusted keys, and this "
                       "publisher's " + ("signing key is not among them" if signer
                                         else "settings name no signing key"))
    try:
        existing = store.read(manifest_name(key), max_bytes=MAX_MANIFEST_BYTES)
        if existing is not None and not (signer is not None and trust is not None
                                         and _replace_untrusted(store, key, existing, trust)):
            return skipped(EXISTS, f"artifact {key} is already in {store.location}")
    except ArtifactTooLargeError:
        return skipped(EXISTS, f"artifact {key} is already in {store.location}")
    except Exception as exc:
        return skipped(FAILED, exception_message(exc))
    sizes = _sizes([p for p in scan(source) if p.name != RESTORED_MARK]
                   if source.is_dir() else [])
    files, total = list(sizes), sum(sizes.values())
    if not files:
        return skipped(EMPTY, f"nothing cached under {source}")
    if max_bytes is not None and total > max_bytes:
        return skipped(TOO_LARGE, f"{total} bytes cached, over the cap of {max_bytes}",
                       total, len(files))
    archive_name = f"data-{uuid.uuid4().hex}.tar"
    leftovers = [f"{key}/{archive_name}"]  # removed again unless the manifest is written
    with tempfile.TemporaryDirectory(prefix="llm-init-artifact-") as tmp:
        archive = Path(tmp) / archive_name
        try:
            packed, archive_bytes, archive_sha256 = pack(source, archive)
            manifest = Manifest(key=key, parts=dict(parts), archive=archive_name,
                                archive_bytes=archive_bytes, archive_sha256=archive_sha256,
                                files=packed, created_at=time.time(),
                                host=socket.gethostname(), extra=dict(extra or {}))
            store.put(f"{key}/{archive_name}", archive)
            raw = manifest.to_json()
            if signer is not None:  # before the manifest: a reader never sees it unsigned
                leftovers.append(signature_name(key, raw))
                signature = Path(tmp) / "manifest.sig"
                signature.write_bytes(signer.sign(raw))
                store.put(signature_name(key, raw), signature)
            created = store.put_new(manifest_name(key), raw)
        except Exception as exc:
            for name in leftovers:
                _delete_quietly(store, name)
            return skipped(FAILED, exception_message(exc), total, len(files))
    if not created:
        for name in leftovers:
            _delete_quietly(store, name)
        return skipped(EXISTS, f"another publisher completed artifact {key} first",
                       total, len(files))
    with contextlib.suppress(Exception):  # the index only explains misses: best effort
        store.put_new(index_name(parts, key), json.dumps(dict(parts), sort_keys=True).encode())
    return PublishOutcome(result=PUBLISHED, key=key, bytes=manifest.archive_bytes,
                          files=len(packed), seconds=time.perf_counter() - started,
                          signed_by=signer.key_id if signer else None)


def _sizes(paths: list[Path]) -> dict[Path, int]:
    """Each file's size; one removed since it was listed (vLLM's temporary files) is left out."""
    sizes = {}
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            sizes[path] = path.stat().st_size
    return sizes


def _delete_quietly(store: ArtifactStore, name: str) -> None:
    # An orphaned archive without a manifest is never read; cleaning up is a courtesy.
    with contextlib.suppress(Exception):
        store.delete(name)
