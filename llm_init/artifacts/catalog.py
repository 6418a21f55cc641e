"""What an artifact store holds, and pruning it without pulling an artifact from under a restore.

Everything read here comes from a shared store and is untrusted: manifests are parsed, never
trusted for names to delete (deletions use the store's own listing), and text shown to a person
goes through ``printable`` first.

Pruning is two-step. ``prune`` first writes a **tombstone** (``tombstones/<key>.json``: when,
and which objects the key had), then deletes the manifest, so that no new restore starts; a
restore that read the manifest a moment before still finds its archive, because the archive is
deleted only by a later ``prune`` once the tombstone is older than ``grace_s``, which must
exceed the longest restore's ``timeout_s``. If the key was published again meanwhile, the
objects its new manifest names are kept.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

from llm_init.artifacts.manifest import MANIFEST_NAME, Manifest
from llm_init.artifacts.stores import ArtifactStore
from llm_init.artifacts.transfer import INDEX_PREFIX, index_name, manifest_name
from llm_init.errors import ArtifactError

TOMBSTONE_PREFIX = "tombstones"
DEFAULT_GRACE_S = 3600.0  # longer than any sane restore timeout (the default is 60 s)
_RESERVED = {INDEX_PREFIX, TOMBSTONE_PREFIX}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


class CatalogError(ArtifactError):
    """An artifact cannot be shown or pruned: none of that key, or its manifest is unreadable."""


def printable(text: object, limit: int = 200) -> str:
    """``text`` with control and format characters (escape sequences, bidi overrides, NULs)
    removed and cut to ``limit`` characters: safe to print from untrusted store content."""
    cleaned = "".join(c for c in str(text) if not unicodedata.category(c).startswith("C"))
    return cleaned if len(cleaned) <= limit else cleaned[:limit - 3] + "..."


def parse_age(text: str) -> float:
    """Seconds in ``90s``, ``15m``, ``12h``, ``7d``, ``2w`` (a bare number is seconds)."""
    match = _DURATION.match(text)
    if match is None:
        raise CatalogError(f"age {text!r} must be a number with s, m, h, d or w, e.g. 7d")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactEntry:
    """One artifact in the store, from its manifest; ``error`` says why the manifest could not
    be read (then only ``key`` is known)."""

    key: str
    model: str = ""
    revision: str = ""
    vllm: str = ""
    created_at: float = 0.0
    host: str = ""
    archive: str = ""
    archive_bytes: int = 0
    size: int = 0
    files: int = 0
    parts: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None

    def age_s(self, now: float) -> float | None:
        return now - self.created_at if self.error is None else None

    def to_dict(self, now: float) -> dict[str, object]:
        age = self.age_s(now)
        return {"key": printable(self.key), "model": printable(self.model),
                "revision": printable(self.revision), "vllm": printable(self.vllm),
                "created_at": self.created_at, "age_s": round(age, 1) if age is not None else None,
                "host": printable(self.host), "archive": printable(self.archive),
                "archive_bytes": self.archive_bytes, "size": self.size, "files": self.files,
                "error": printable(self.error) if self.error else None}


def artifact_keys(store: ArtifactStore) -> list[str]:
    """The keys that have a manifest in the store."""
    keys = []
    for name in store.list():
        head, sep, tail = name.partition("/")
        if sep and tail == MANIFEST_NAME and head not in _RESERVED:
            keys.append(head)
    return keys


def read_entry(store: ArtifactStore, key: str) -> ArtifactEntry | None:
    """The entry of ``key``; ``None`` if it has no manifest (any more)."""
    raw = store.read(manifest_name(key))
    if raw is None:
        return None
    try:
        manifest = Manifest.from_json(raw)
    except Exception as exc:  # corrupt or of another format: listed, with why
        return ArtifactEntry(key=key, error=str(exc) or type(exc).__name__)
    created = manifest.created_at if math.isfinite(manifest.created_at) else 0.0
    parts = manifest.parts
    return ArtifactEntry(key=key, model=parts.get("model.source", ""),
                         revision=parts.get("model.revision", ""), vllm=parts.get("vllm", ""),
                         created_at=created, host=manifest.host, archive=manifest.archive,
                         archive_bytes=manifest.archive_bytes, size=manifest.size,
                         files=len(manifest.files), parts=dict(parts))


def _matches(entry: ArtifactEntry, model: str | None, vllm: str | None,
             older_than_s: float | None, now: float) -> bool:
    if entry.error is not None:
        # Nothing is known of it but its age in the store: only an unfiltered query takes it.
        return model is None and vllm is None and older_than_s is None
    if model is not None and model not in (entry.model, entry.parts.get("model.weights")):
        return False
    if vllm is not None and entry.vllm != vllm:
        return False
    return older_than_s is None or now - entry.created_at > older_than_s


def list_artifacts(store: ArtifactStore, *, model: str | None = None, vllm: str | None = None,
                   older_than_s: float | None = None, now: float | None = None
                   ) -> list[ArtifactEntry]:
    """The artifacts of ``model`` (its source as the key's parts show it, or its weights
    digest), made by vLLM ``vllm``, older than ``older_than_s``; newest first."""
    now = time.time() if now is None else now
    found = [e for e in (read_entry(store, k) for k in artifact_keys(store)) if e is not None]
    chosen = [e for e in found if _matches(e, model, vllm, older_than_s, now)]
    return sorted(chosen, key=lambda e: (-e.created_at, e.key))


def inspect_artifact(store: ArtifactStore, key: str) -> Manifest:
    """The manifest of ``key``; ``CatalogError`` naming the key if there is none or it cannot
    be read."""
    if not key or "/" in key or key in _RESERVED:
        raise CatalogError(f"{printable(key)!r} is not an artifact key")
    raw = store.read(manifest_name(key))
    if raw is None:
        raise CatalogError(f"no artifact {printable(key)!r} in {store.location}")
    try:
        return Manifest.from_json(raw)
    except Exception as exc:
        raise CatalogError(f"the manifest of {printable(key)!r} cannot be read: "
                           f"{printable(exc)}") from exc


def tombstone_name(key: str) -> str:
    return f"{TOMBSTONE_PREFIX}/{key}.json"


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneReport:
    """What a prune did (or, dry, would do): the artifacts whose manifests it removed, the
    objects it deleted once their grace period was over, and the keys still waiting."""

    pruned: tuple[ArtifactEntry, ...] = ()
    deleted: tuple[str, ...] = ()
    kept: tuple[str, ...] = ()  # objects a tombstone named that a new manifest uses again
    waiting: tuple[str, ...] = ()  # keys whose tombstone is younger than the grace period
    dry_run: bool = False


def prune(store: ArtifactStore, *, model: str | None = None, vllm: str | None = None,
          older_than_s: float | None = None, grace_s: float = DEFAULT_GRACE_S,
          dry_run: bool = False, now: float | None = None) -> PruneReport:
    """Retire the matching artifacts (tombstone, then manifest: no new restore starts) and
    delete what earlier prunes retired more than ``grace_s`` ago; see the module docs."""
    if grace_s < 0 or not math.isfinite(grace_s):
        raise CatalogError(f"the grace period must be >= 0 seconds, got {grace_s!r}")
    now = time.time() if now is None else now
    pruned = list_artifacts(store, model=model, vllm=vllm, older_than_s=older_than_s, now=now)
    if not dry_run:
        for entry in pruned:
            _retire(store, entry, now)
    deleted: list[str] = []
    kept: list[str] = []
    waiting: list[str] = []
    for stone in _tombstones(store):
        if now - stone.pruned_at < grace_s:
            waiting.append(stone.key)
            continue
        gone, stays = _collect(store, stone, dry_run)
        deleted += gone
        kept += stays
    return PruneReport(pruned=tuple(pruned), deleted=tuple(deleted), kept=tuple(kept),
                       waiting=tuple(waiting), dry_run=dry_run)


def _retire(store: ArtifactStore, entry: ArtifactEntry, now: float) -> None:
    objects = [n for n in store.list(f"{entry.key}/") if n != manifest_name(entry.key)]
    stone = {"key": entry.key, "pruned_at": now, "objects": objects}
    # The tombstone first: a prune that dies here leaves the artifact whole (its manifest
    # still names its archive, so the later collection keeps it).
    store.delete(tombstone_name(entry.key))
    store.put_new(tombstone_name(entry.key), json.dumps(stone, sort_keys=True).encode())
    store.delete(manifest_name(entry.key))
    if entry.parts:
        with contextlib.suppress(Exception):  # the index only explains misses
            store.delete(index_name(entry.parts, entry.key))


@dataclass(frozen=True, slots=True)
class _Tombstone:
    key: str
    pruned_at: float
    objects: frozenset[str]


def _tombstones(store: ArtifactStore) -> list[_Tombstone]:
    found: list[_Tombstone] = []
    for name in store.list(f"{TOMBSTONE_PREFIX}/"):
        key = name.removeprefix(f"{TOMBSTONE_PREFIX}/").removesuffix(".json")
        if not key or "/" in key:
            continue
        try:
            data = json.loads(store.read(name) or b"null")
            pruned_at = float(data["pruned_at"])
            objects = frozenset(str(o) for o in data["objects"])
        except (ValueError, KeyError, TypeError):
            # Unreadable: only its key's manifest is protected, and nothing else is named.
            pruned_at, objects = 0.0, frozenset()
        found.append(_Tombstone(key, pruned_at if math.isfinite(pruned_at) else 0.0, objects))
    return found


def _collect(store: ArtifactStore, stone: _Tombstone, dry_run: bool
             ) -> tuple[list[str], list[str]]:
    """Delete the objects a ripe tombstone named, except those a manifest published since then
    uses; then the tombstone."""
    key = stone.key
    in_use = {manifest_name(key)}
    raw = store.read(manifest_name(key))
    if raw is not None:
        # A damaged new manifest protects nothing: restores set it aside themselves.
        with contextlib.suppress(Exception):
            in_use.add(f"{key}/{Manifest.from_json(raw).archive}")
    present = store.list(f"{key}/")
    # Only names both in the store's own listing and in the tombstone: a publish that started
    # after the prune (a new archive, not yet with its manifest) is left alone.
    gone = [n for n in present if n in stone.objects and n not in in_use]
    stays = [n for n in present if n in stone.objects and n in in_use]
    if not dry_run:
        for name in gone:
            store.delete(name)
        store.delete(tombstone_name(key))
    return gone, stays


__all__ = ["DEFAULT_GRACE_S", "ArtifactEntry", "CatalogError", "PruneReport",
           "inspect_artifact", "list_artifacts", "parse_age", "printable", "prune",
           "tombstone_name"]
