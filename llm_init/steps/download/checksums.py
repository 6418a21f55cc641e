"""Verifiers: what a fetched file is checked against (its size always, a digest where known).

Digests by source, the cheapest reliable one first:

- S3: the store's own whole-object CRC32, SHA-256 or SHA-1 (``ChecksumMode=ENABLED``; modern
  SDKs upload CRC32 by default), or its composite CRC32 over the parts; else the ETag: a
  single-part ETag is the object's MD5, a multipart one (``<md5 of part md5s>-<parts>``) is
  recomputed the same way. The parts' size comes from the store (a HEAD of part 1); where it
  gives none, each standard part size consistent with the part count is tried, and if none
  matches the file is checked by size only. ETags of SSE-KMS and SSE-C objects are not MD5s:
  size only, unless the store has a CRC. CRC32 and SHA-256 cost a fraction of MD5's CPU time.
- Hugging Face: SHA-256 for LFS files, the git blob SHA-1 for the others.
- A local directory: size only.

CRC32 is computed with ISA-L's (``isal``, the ``fast`` extra) where it is installed: about three
times zlib's speed on x86-64, and on a machine with few cores the time it saves goes to the
network and the disk.
"""

from __future__ import annotations

import hashlib
import importlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

MIB = 1024 * 1024
# Part sizes of common S3 clients (boto3 and the AWS CLI use 8 MiB; s3cmd and rclone 5 or
# 16 MiB; s5cmd 50 MiB); tried when a server does not say how large part 1 is.
STANDARD_PART_SIZES = tuple(n * MIB for n in (8, 5, 16, 15, 32, 50, 64, 100, 128, 256, 512, 1024))
# Digests over parts, named by the algorithm of each part's digest.
PARTS_ALGORITHMS = {"s3-multipart-md5": "md5", "s3-composite-crc32": "crc32"}


@dataclass(frozen=True, slots=True)
class Checksum:
    """An expected digest of a file, as a source gives it (lower-case hex; for digests over
    parts, ``<hex>-<parts>``)."""

    algorithm: str  # "md5", "sha256", "sha1", "crc32", "git-blob-sha1", or a PARTS_ALGORITHMS key
    value: str
    parts: int = 1


class Hash(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...

    def digest(self) -> bytes: ...

    def hexdigest(self) -> str: ...


Crc32Function = Callable[[bytes | memoryview, int], int]


def fastest_crc32() -> Crc32Function:
    """ISA-L's ``crc32`` if ``isal`` is installed, else zlib's (the same values)."""
    try:
        module = importlib.import_module("isal.isal_zlib")
    except ImportError:
        return zlib.crc32
    function: Crc32Function = module.crc32
    return function


crc32: Crc32Function = fastest_crc32()


class Crc32:
    """A CRC32 with a ``hashlib``-like face (big-endian digest, as S3 encodes it)."""

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes | memoryview, /) -> None:
        self._value = crc32(data, self._value)

    def digest(self) -> bytes:
        return self._value.to_bytes(4, "big")

    def hexdigest(self) -> str:
        return self.digest().hex()


def new_hash(algorithm: str) -> Hash:
    if algorithm == "crc32":
        return Crc32()
    return hashlib.new(algorithm, usedforsecurity=False)


class Verifier(Protocol):
    """Digests a file's bytes in order and says whether they match what the source gave."""

    @property
    def method(self) -> str: ...

    def update(self, data: bytes | memoryview) -> None: ...

    def mismatch(self) -> str | None:
        """``None`` if the bytes match, else what differs (expected and actual)."""


class SizeOnly:
    """No digest is known: the size, checked by the fetcher, is the only check."""

    method = "size"

    def update(self, data: bytes | memoryview) -> None:
        pass

    def mismatch(self) -> str | None:
        return None


class Digest:
    """A whole-file digest: MD5, SHA-256, SHA-1, CRC32, or git's blob SHA-1."""

    def __init__(self, checksum: Checksum, size: int) -> None:
        self.method = checksum.algorithm
        self._expected = checksum.value
        if checksum.algorithm == "git-blob-sha1":
            self._hash: Hash = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
        else:
            self._hash = new_hash(checksum.algorithm)

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(data)

    def mismatch(self) -> str | None:
        actual = self._hash.hexdigest()
        if actual == self._expected:
            return None
        return f"{self.method} is {actual}, the source says {self._expected}"


class PartsDigest:
    """A digest over parts, as S3 computes them: the digest of the concatenated binary digests
    of each part (multipart ETags: MD5; composite checksums: CRC32).

    ``part_sizes`` are the candidates; ``authoritative`` says the store named the part size,
    so a mismatch is corruption. Otherwise no match means an unknown part size: size only.
    """

    def __init__(self, checksum: Checksum, part_sizes: tuple[int, ...], *,
                 authoritative: bool) -> None:
        self.method = checksum.algorithm
        self._expected = checksum.value
        self._authoritative = authoritative
        algorithm = PARTS_ALGORITHMS[checksum.algorithm]
        self._tracks = [_PartTrack(size, lambda: new_hash(algorithm)) for size in part_sizes]

    def update(self, data: bytes | memoryview) -> None:
        for track in self._tracks:
            track.update(data)

    def mismatch(self) -> str | None:
        digests = [track.finish() for track in self._tracks]
        if self._expected in digests:
            return None
        if not self._authoritative:
            self.method = "size"  # the part size is unknown: a digest we cannot recompute
            return None
        return f"{self.method} is {digests[0]}, the source says {self._expected}"


class _PartTrack:
    def __init__(self, part_size: int, factory: Callable[[], Hash]) -> None:
        self.part_size = part_size
        self._factory = factory
        self._digests: list[bytes] = []
        self._part = factory()
        self._filled = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self.part_size - self._filled)
            self._part.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.part_size:
                self._close_part()

    def _close_part(self) -> None:
        self._digests.append(self._part.digest())
        self._part = self._factory()
        self._filled = 0

    def finish(self) -> str:
        if self._filled:
            self._close_part()
        combined = self._factory()
        combined.update(b"".join(self._digests))
        return f"{combined.hexdigest()}-{len(self._digests)}"


def part_size_candidates(size: int, parts: int) -> tuple[int, ...]:
    """Standard part sizes that split ``size`` bytes into exactly ``parts`` parts."""
    if parts == 1:
        return (max(size, 1),)
    return tuple(p for p in STANDARD_PART_SIZES if -(-size // p) == parts)


def verifier_for(checksum: Checksum | None, size: int) -> Verifier:
    """The verifier of a whole-file checksum (digests over parts need a part size: see S3)."""
    if checksum is None:
        return SizeOnly()
    return Digest(checksum, size)
