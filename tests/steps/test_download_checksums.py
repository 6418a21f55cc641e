"""Verifiers recompute the digests sources give: git blob ids, S3 multipart ETags and composite
CRC32s (with a known or a guessed part size), and fall back to size only when they must."""

from __future__ import annotations

import hashlib
import random
import sys
import zlib

import pytest

from llm_init.steps.download.checksums import (
    MIB,
    Checksum,
    Crc32,
    Digest,
    PartsDigest,
    fastest_crc32,
    part_size_candidates,
)

DATA = random.Random(7).randbytes(2 * MIB + 12345)


def s3_parts(data: bytes, part_size: int, part_hash: str) -> str:
    """What S3 reports over parts: digest of the concatenated part digests, then ``-N``."""
    parts = [data[i:i + part_size] for i in range(0, len(data), part_size)]
    if part_hash == "md5":
        digests = b"".join(hashlib.md5(p).digest() for p in parts)
        return f"{hashlib.md5(digests).hexdigest()}-{len(parts)}"
    digests = b"".join(zlib.crc32(p).to_bytes(4, "big") for p in parts)
    return f"{zlib.crc32(digests).to_bytes(4, 'big').hex()}-{len(parts)}"


def feed(verifier: Digest | PartsDigest, data: bytes, step: int = 100_000) -> str | None:
    for i in range(0, len(data), step):
        verifier.update(data[i:i + step])
    return verifier.mismatch()


def test_git_blob_sha1_matches_git() -> None:
    """The git blob SHA-1 of b'hello\\n' is the id ``git hash-object`` prints."""
    checksum = Checksum("git-blob-sha1", "ce013625030ba8dba906f756967f9e9ca394464a")
    assert feed(Digest(checksum, 6), b"hello\n") is None


def test_multipart_etag_with_the_stores_part_size() -> None:
    """A multipart ETag is recomputed from the part size the store reported."""
    etag = s3_parts(DATA, MIB, "md5")
    verifier = PartsDigest(Checksum("s3-multipart-md5", etag, 3), (MIB,), authoritative=True)
    assert feed(verifier, DATA) is None
    assert verifier.method == "s3-multipart-md5"


def test_composite_crc32_over_guessed_part_sizes() -> None:
    """Without a reported part size, the standard size that fits the part count is found."""
    data = DATA * 5  # about 10.5 MiB: two 8 MiB parts
    value = s3_parts(data, 8 * MIB, "crc32")
    candidates = part_size_candidates(len(data), 2)
    verifier = PartsDigest(Checksum("s3-composite-crc32", value, 2), candidates,
                           authoritative=False)
    assert 8 * MIB in candidates
    assert (feed(verifier, data), verifier.method) == (None, "s3-composite-crc32")


def test_unknown_part_size_falls_back_to_size() -> None:
    """When no candidate part size reproduces the ETag, the file is checked by size only."""
    etag = s3_parts(DATA, 777_777, "md5")
    verifier = PartsDigest(Checksum("s3-multipart-md5", etag, 3), (MIB,), authoritative=False)
    assert (feed(verifier, DATA), verifier.method) == (None, "size")


def test_corruption_is_reported_when_the_part_size_is_known() -> None:
    """With the store's part size, different bytes are a mismatch naming both digests."""
    etag = s3_parts(DATA, MIB, "md5")
    verifier = PartsDigest(Checksum("s3-multipart-md5", etag, 3), (MIB,), authoritative=True)
    problem = feed(verifier, b"x" + DATA[1:])
    assert problem is not None
    assert etag in problem


def test_crc32_in_pieces_is_zlibs_crc32_of_the_whole() -> None:
    crc = Crc32()
    for i in range(0, len(DATA), 100_000):
        crc.update(memoryview(DATA)[i:i + 100_000])
    assert crc.digest() == zlib.crc32(DATA).to_bytes(4, "big")


def test_crc32_is_isals_where_it_is_installed() -> None:
    isal_zlib = pytest.importorskip("isal.isal_zlib")
    assert fastest_crc32() is isal_zlib.crc32


def test_crc32_is_zlibs_without_isal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "isal.isal_zlib", None)  # makes the import fail
    assert fastest_crc32() is zlib.crc32
