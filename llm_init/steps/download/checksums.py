"""Verifiers: what a fetched file is checked against (size always, a digest where known).

Digests by source:

- S3 single-part ETag: the MD5 of the object (not for SSE-KMS or SSE-C objects: size only).
- S3 multipart ETag (``<md5 of part md5s>-<parts>``): the same multipart MD5, computed with the
  part size the server reports (a HEAD of part 1). Where it reports none, each standard part
  size consistent with the part count is tried; if none matches, the file is checked by size.
- Hugging Face: SHA-256 for LFS files, the git blob SHA-1 for the others.
- A local directory: size only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

MIB = 1024 * 1024
# Part sizes of common S3 clients (boto3 and the AWS CLI use 8 MiB; s3cmd and rclone 5 or
# 16 MiB; s5cmd 50 MiB); tried when a server does not say how large part 1 is.
STANDARD_PART_SIZES = tuple(n * MIB for n in (8, 5, 16, 15, 32, 50, 64, 100, 128, 256, 512, 1024))


@dataclass(frozen=True, slots=True)
class Checksum:
    """An expected digest of a file, as a source gives it."""

    algorithm: str  # "md5", "s3-multipart-md5", "sha256" or "git-blob-sha1"
    value: str  # lower-case hex
    parts: int = 1  # for "s3-multipart-md5": the part count from the ETag


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
    """A whole-file digest: MD5 (single-part ETag), SHA-256 (LFS) or git blob SHA-1."""

    def __init__(self, checksum: Checksum, size: int) -> None:
        self.method = checksum.algorithm
        self._expected = checksum.value
        if checksum.algorithm == "git-blob-sha1":
            self._hash = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
        else:
            self._hash = hashlib.new(checksum.algorithm, usedforsecurity=False)

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(data)

    def mismatch(self) -> str | None:
        actual = self._hash.hexdigest()
        if actual == self._expected:
            return None
        return f"{self.method} is {actual}, the source says {self._expected}"


class MultipartMD5:
    """S3's multipart ETag: the MD5 of the concatenated binary MD5s of each part.

    ``part_sizes`` are the candidates; ``authoritative`` says the server named the part size,
    so a mismatch is corruption. Otherwise no match means an unknown part size: size only.
    """

    def __init__(self, checksum: Checksum, part_sizes: tuple[int, ...], *,
                 authoritative: bool) -> None:
        self._expected = checksum.value
        self._authoritative = authoritative
        self._tracks = [_PartTrack(size) for size in part_sizes]
        self.method = "s3-multipart-md5"

    def update(self, data: bytes | memoryview) -> None:
        for track in self._tracks:
            track.update(data)

    def mismatch(self) -> str | None:
        digests = [track.finish() for track in self._tracks]
        if self._expected in digests:
            self._tracks = [t for t, d in zip(self._tracks, digests, strict=True)
                            if d == self._expected]
            return None
        if not self._authoritative:
            self.method = "size"  # part size unknown: an ETag we cannot recompute
            return None
        shown = digests[0] if digests else "?"
        return f"multipart MD5 is {shown}-{self._tracks[0].parts}, the ETag says {self._expected}"


class _PartTrack:
    def __init__(self, part_size: int) -> None:
        self.part_size = part_size
        self.parts = 0
        self._digests: list[bytes] = []
        self._part = hashlib.md5(usedforsecurity=False)
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
        self._part = hashlib.md5(usedforsecurity=False)
        self._filled = 0

    def finish(self) -> str:
        if self._filled:
            self._close_part()
        self.parts = len(self._digests)
        combined = hashlib.md5(b"".join(self._digests), usedforsecurity=False).hexdigest()
        return f"{combined}-{self.parts}"


def part_size_candidates(size: int, parts: int) -> tuple[int, ...]:
    """Standard part sizes that split ``size`` bytes into exactly ``parts`` parts."""
    if parts == 1:
        return (max(size, 1),)
    return tuple(p for p in STANDARD_PART_SIZES if -(-size // p) == parts)


def verifier_for(checksum: Checksum | None, size: int) -> Verifier:
    """The verifier of a whole-file checksum (multipart ETags need the source: see S3)."""
    if checksum is None:
        return SizeOnly()
    return Digest(checksum, size)
