"""Model sources: what a source is, how one is named, which of its files a node fetches.

A ``SourceSpec`` is the plain, picklable description that travels to every node;
``llm_init.steps.download.node.open_source`` builds the live ``Source`` (with its client) on the
node that reads from it.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, get_args

from llm_init.config import NodeModelDownloadable
from llm_init.steps.download import safetensors
from llm_init.steps.download.checksums import Checksum, Digest, SizeOnly, Verifier, new_hash
from llm_init.steps.download.errors import SourceNotFoundError

SourceKind = Literal["local", "s3", "gs", "hf"]  # gs: streamed by vLLM only, never downloaded
# How a local directory's files are checked: the size and the header of safetensors files
# (cheap), or also the SHA-256 of every file.
LocalVerify = Literal["header", "sha256"]
LOCAL_VERIFY_MODES: tuple[str, ...] = get_args(LocalVerify)
# Checksum files a model directory may carry (``sha256sum`` output: ``<hex>  <path>``).
SHA256SUMS_NAMES = ("SHA256SUMS", "sha256sums.txt", "SHA256SUMS.txt")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX40 = re.compile(r"[0-9a-f]{40}")

STATE_DIR = ".llm-init"  # inside a model directory: partial files, journal, manifest, lock

# A file's name decides whether it is part of the tokenizer set (``TOKENIZER_ONLY``): the
# substrings Ray Serve LLM uses ("tokenizer", "config.json", "chat_template"), plus the
# vocabulary files of older tokenizers that carry none of them.
TOKENIZER_SUBSTRINGS = ("tokenizer", "config.json", "chat_template")
TOKENIZER_NAMES = frozenset({
    "vocab.json", "vocab.txt", "merges.txt", "special_tokens_map.json", "added_tokens.json",
    "spiece.model", "sentencepiece.bpe.model", "tekken.json", "params.json",
})
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx",
                   ".gguf", ".ot", ".tflite", ".npz")
_HF_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]+")


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """One file of a model as its source lists it."""

    path: str  # relative, '/'-separated
    size: int
    version: str  # identity of this version of the file: a different value means re-fetch
    checksum: Checksum | None = None


@dataclass(frozen=True, slots=True)
class Listing:
    """The files of a model at one revision."""

    files: tuple[RemoteFile, ...]
    revision: str | None = None  # resolved revision (a commit on the Hub), if the source has one


class Source(Protocol):
    """A live model source on one node: lists files and reads them from an offset."""

    spec: SourceSpec

    @property
    def cache_name(self) -> str:
        """The directory name of this model in the cache: ``<sanitized source>[@<revision>]``."""

    def listing(self) -> Listing: ...

    def verifier(self, file: RemoteFile) -> Verifier:
        """A fresh verifier for ``file`` (may ask the source for more, e.g. a part size)."""

    def read(self, file: RemoteFile, start: int, chunk_size: int) -> Generator[bytes]:
        """The bytes of ``file`` from offset ``start`` to its end, in chunks."""


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """Where a model comes from: a local directory, an S3 URI, a Hugging Face repo id, or a
    ``gs://`` URI (which only vLLM's streaming load formats read: llm-init lists nothing there)."""

    kind: SourceKind
    location: str  # absolute directory, ``s3://bucket/prefix`` or ``org/name``
    revision: str | None = None  # Hugging Face only: branch, tag or commit
    endpoint_url: str | None = None  # S3 or Hub endpoint override

    @property
    def uri(self) -> str:
        """The source as users write it."""
        if self.kind == "hf":
            return f"hf://{self.location}" + (f"@{self.revision}" if self.revision else "")
        return self.location


def parse_source(text: str, *, revision: str | None = None,
                 endpoint_url: str | None = None) -> SourceSpec:
    """Read a model source: ``s3://bucket/prefix``, ``hf://org/name``, a directory, or a Hugging
    Face repo id (``org/name``, when no such directory exists)."""
    if text.startswith("s3://"):
        bucket = text[5:].split("/", 1)[0]
        if not bucket:
            raise SourceNotFoundError(f"model source {text!r} names no bucket")
        return SourceSpec("s3", text.rstrip("/"), None, endpoint_url)
    if text.startswith("gs://"):
        if not text[5:].split("/", 1)[0]:
            raise SourceNotFoundError(f"model source {text!r} names no bucket")
        return SourceSpec("gs", text.rstrip("/"), None, endpoint_url)
    if text.startswith("hf://"):
        return SourceSpec("hf", text[5:].strip("/"), revision or "main", endpoint_url)
    if "://" in text and not text.startswith("file://"):
        scheme = text.split("://", 1)[0]
        raise SourceNotFoundError(
            f"model source {text!r}: scheme {scheme}:// is not supported (use a directory, "
            f"s3://, gs:// with a streaming load format, or a Hugging Face repo id)")
    path = Path(text.removeprefix("file://")).expanduser()
    if path.is_dir() or path.is_absolute() or text.startswith((".", "~", "file://")):
        return SourceSpec("local", str(path.resolve()))
    if _HF_REPO_ID.match(text):
        return SourceSpec("hf", text, revision or "main", endpoint_url)
    raise SourceNotFoundError(f"model source {text!r} is no directory, s3:// URI or repo id")


def sanitize(*parts: str) -> str:
    """A directory name made of ``parts``: path separators become ``--``, the rest is kept to
    letters, digits, ``.``, ``_`` and ``-``."""
    words = [w for part in parts for w in re.split(r"[/\\:]+", part) if w]
    return "--".join(_UNSAFE.sub("_", w) for w in words)


def is_tokenizer_file(path: str) -> bool:
    """Whether ``path`` belongs to the config and tokenizer set (no weights)."""
    name = path.rsplit("/", 1)[-1].lower()
    if name.endswith(WEIGHT_SUFFIXES):
        return False
    return name in TOKENIZER_NAMES or name.endswith(".tiktoken") or any(
        s in name for s in TOKENIZER_SUBSTRINGS)


def select_files(files: Sequence[RemoteFile], what: NodeModelDownloadable, *,
                 prefer_safetensors: bool = True, allow_patterns: Sequence[str] | None = None,
                 ignore_patterns: Sequence[str] = ()) -> tuple[RemoteFile, ...]:
    """The files a node fetches: none, the tokenizer set, or everything; files in hidden
    directories never; other weight formats not when safetensors exist (as vLLM loads)."""
    if what == NodeModelDownloadable.NONE:
        return ()
    chosen = [f for f in files if not any(p.startswith(".") and p not in (".", "..")
                                          for p in f.path.split("/")[:-1])]
    if allow_patterns is not None:
        chosen = [f for f in chosen if any(fnmatch.fnmatch(f.path, p) for p in allow_patterns)]
    chosen = [f for f in chosen if not any(fnmatch.fnmatch(f.path, p) for p in ignore_patterns)]
    if what == NodeModelDownloadable.TOKENIZER_ONLY:
        return tuple(f for f in chosen if is_tokenizer_file(f.path))
    if prefer_safetensors and any(f.path.endswith(".safetensors") for f in chosen):
        chosen = [f for f in chosen
                  if f.path.endswith(".safetensors") or not f.path.endswith(WEIGHT_SUFFIXES)]
    return tuple(chosen)


class LocalDirSource:
    """A directory on this node (or a shared file system): checked by size and, for
    safetensors files, by their header; with ``verify="sha256"`` also by each file's SHA-256
    (against the digest the directory states, else the source file's own, hashed before the
    copy). Versioned by size and modification time."""

    def __init__(self, spec: SourceSpec, *, verify: LocalVerify = "header") -> None:
        if verify not in LOCAL_VERIFY_MODES:
            raise ValueError(f"verify={verify!r} is not one of {', '.join(LOCAL_VERIFY_MODES)}")
        self.spec = spec
        self.root = Path(spec.location)
        self.verify = verify

    @property
    def cache_name(self) -> str:
        return sanitize("local", self.spec.location)

    def listing(self) -> Listing:
        if not self.root.is_dir():
            raise SourceNotFoundError(f"model directory {self.root} does not exist")
        return Listing(tuple(walk_files(self.root)))

    def verifier(self, file: RemoteFile) -> Verifier:
        checks: list[Verifier] = []
        if safetensors.is_safetensors(file.path):
            checks.append(safetensors.SafetensorsHeader())
        if self.verify == "sha256":
            checksum = file.checksum or hash_file(self.root / file.path)
            checks.append(Digest(checksum, file.size))
        return AllOf(checks) if checks else SizeOnly()

    def read(self, file: RemoteFile, start: int, chunk_size: int) -> Generator[bytes]:
        with open(self.root / file.path, "rb", buffering=0) as f:
            f.seek(start)
            while chunk := f.read(chunk_size):
                yield chunk


class AllOf:
    """Several verifiers over the same bytes; the first mismatch is the file's."""

    def __init__(self, checks: Sequence[Verifier]) -> None:
        self.checks = tuple(checks)
        self.method = "+".join(c.method for c in self.checks)

    def update(self, data: bytes | memoryview) -> None:
        for check in self.checks:
            check.update(data)

    def mismatch(self) -> str | None:
        return next((p for c in self.checks if (p := c.mismatch()) is not None), None)


def hash_file(path: Path, chunk_size: int = 1024 * 1024) -> Checksum:
    """The SHA-256 of a file on disk."""
    digest = new_hash("sha256")
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(chunk_size):
            digest.update(chunk)
    return Checksum("sha256", digest.hexdigest())


def walk_files(root: Path) -> Iterator[RemoteFile]:
    """Every regular file under ``root`` (following links, as the Hub's cache uses them),
    skipping hidden directories such as ``.llm-init`` and ``.git``. A file's checksum is the
    digest the directory states for it: a ``SHA256SUMS`` file at the root, or the name of the
    Hub cache blob it links to (SHA-256 for LFS files, the git blob SHA-1 for others)."""
    stated = stated_sha256(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            full = Path(dirpath, name)
            st = full.stat()
            rel = full.relative_to(root).as_posix()
            checksum = stated.get(rel) or _blob_checksum(full)
            yield RemoteFile(rel, st.st_size, f"{st.st_size}-{st.st_mtime_ns}", checksum)


def stated_sha256(root: Path) -> dict[str, Checksum]:
    """``path -> SHA-256`` from a ``sha256sum``-style file at the root of a model directory."""
    for name in SHA256SUMS_NAMES:
        try:
            text = (root / name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        out = {}
        for line in text.splitlines():
            digest, _, path = line.strip().partition(" ")
            path = path.strip().removeprefix("*").removeprefix("./")
            if _HEX64.fullmatch(digest.lower()) and path:
                out[path] = Checksum("sha256", digest.lower())
        return out
    return {}


def _blob_checksum(path: Path) -> Checksum | None:
    if not path.is_symlink():
        return None
    target = Path(os.path.realpath(path))
    if target.parent.name != "blobs":
        return None
    if _HEX64.fullmatch(target.name):
        return Checksum("sha256", target.name)
    if _HEX40.fullmatch(target.name):
        return Checksum("git-blob-sha1", target.name)
    return None
