"""S3 and S3-compatible stores through boto3: listing, ETag verification, ranged reads.

The endpoint is the step's ``endpoint_url``, else what boto3 reads itself from the environment
(``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``); with an endpoint override, requests use
path-style addressing, which S3-compatible stores (MinIO, Ceph, moto) all accept.
Credentials come from boto3's usual chain on each node.
"""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Generator
from typing import Any
from urllib.parse import urlsplit

from llm_init.steps.download.checksums import (
    PARTS_ALGORITHMS,
    Checksum,
    Digest,
    PartsDigest,
    SizeOnly,
    Verifier,
    part_size_candidates,
)
from llm_init.steps.download.errors import DownloadError, SourceNotFoundError
from llm_init.steps.download.sources import Listing, RemoteFile, SourceSpec, sanitize

# Connections per client: enough for the fetcher's parallel files plus listing.
MAX_POOL_CONNECTIONS = 32
PERMANENT_ERRORS = frozenset({"AccessDenied", "NoSuchKey", "NoSuchBucket", "InvalidObjectState",
                              "403", "404"})


class S3Source:
    """``s3://bucket/prefix``: every object under the prefix is a file of the model."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        rest = spec.location.removeprefix("s3://")
        self.bucket, _, prefix = rest.partition("/")
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.endpoint_url = (spec.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                             or os.environ.get("AWS_ENDPOINT_URL"))
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = _client(self.endpoint_url)
        return self._client

    @property
    def cache_name(self) -> str:
        # Objects of the same name on two stores are different models.
        host = urlsplit(self.endpoint_url).netloc if self.endpoint_url else ""
        return sanitize("s3", host, self.spec.location.removeprefix("s3://"))

    def listing(self) -> Listing:
        from botocore.exceptions import BotoCoreError, ClientError

        files: list[RemoteFile] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix)
            for page in pages:
                for obj in page.get("Contents", ()):
                    name: str = obj["Key"]
                    if name.endswith("/"):
                        continue  # a "directory" marker object
                    files.append(_remote_file(name[len(self.prefix):], obj))
        except (ClientError, BotoCoreError) as exc:
            raise DownloadError(f"cannot list {self.spec.location}: {exc}") from exc
        if not files:
            raise SourceNotFoundError(f"no objects under {self.spec.location}")
        return Listing(tuple(files))

    def verifier(self, file: RemoteFile) -> Verifier:
        # One HEAD per file: does the store keep a checksum of its own, is the ETag an MD5?
        head = self._call(file, "head_object", ChecksumMode="ENABLED")
        checksum = _store_checksum(head, file)
        if checksum is None:
            encrypted = (head.get("ServerSideEncryption") == "aws:kms"
                         or head.get("SSECustomerAlgorithm"))
            if encrypted or file.checksum is None:
                return SizeOnly()  # the ETags of encrypted objects are not MD5s
            checksum = file.checksum
        if checksum.algorithm not in PARTS_ALGORITHMS:
            return Digest(checksum, file.size)
        if checksum.parts == 1:
            return PartsDigest(checksum, (max(file.size, 1),), authoritative=True)
        # A second HEAD for the size of part 1. (No If-Match: some stores compare it with
        # the part's ETag; the GET checks the version.)
        part = self.client.head_object(Bucket=self.bucket, Key=self._object(file), PartNumber=1)
        part_one = int(part.get("ContentLength", 0))
        if 0 < part_one < file.size:
            return PartsDigest(checksum, (part_one,), authoritative=True)
        return PartsDigest(checksum, part_size_candidates(file.size, checksum.parts),
                           authoritative=False)

    def read(self, file: RemoteFile, start: int, chunk_size: int) -> Generator[bytes]:
        response = self._call(file, "get_object", Range=f"bytes={start}-")
        body = response["Body"]
        try:
            while chunk := body.read(chunk_size):
                yield chunk
        finally:
            body.close()

    def _call(self, file: RemoteFile, operation: str, **kwargs: Any) -> Any:
        """``head_object`` or ``get_object`` of the listed version (If-Match: the bytes after
        a resume come from the same version as the bytes before it)."""
        from botocore.exceptions import ClientError

        try:
            return getattr(self.client, operation)(
                Bucket=self.bucket, Key=self._object(file), IfMatch=file.version, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "412"):
                raise DownloadError(
                    f"{self.spec.location}/{file.path} changed while it was being downloaded "
                    f"(its ETag is no longer {file.version}); download again") from exc
            if code in PERMANENT_ERRORS:  # no use retrying these
                raise DownloadError(f"{self.spec.location}/{file.path}: {exc}") from exc
            raise

    def _object(self, file: RemoteFile) -> str:
        return self.prefix + file.path


_clients: dict[str | None, Any] = {}
_clients_lock = threading.Lock()


def _client(endpoint_url: str | None) -> Any:
    """One S3 client per endpoint and process. Clients are thread-safe, and building one
    (a fresh boto3 session loads its service models) costs more CPU than fetching a small
    model; credentials are therefore resolved once per process, refreshed by botocore."""
    with _clients_lock:
        client = _clients.get(endpoint_url)
        if client is None:
            import boto3
            from botocore.config import Config

            options: dict[str, Any] = {
                "max_pool_connections": MAX_POOL_CONNECTIONS,
                "retries": {"max_attempts": 5, "mode": "standard"},
                "s3": {"addressing_style": "path"} if endpoint_url else None,
                # The fetcher verifies every byte itself; botocore >= 1.36 would digest full
                # reads a second time.
                "response_checksum_validation": "when_required",
            }
            try:
                config = Config(**options)
            except TypeError:  # an older botocore without that option
                del options["response_checksum_validation"]
                config = Config(**options)
            client = boto3.session.Session().client("s3", endpoint_url=endpoint_url,
                                                    config=config)
            _clients[endpoint_url] = client
        return client


def _store_checksum(head: dict[str, Any], file: RemoteFile) -> Checksum | None:
    """The store's own checksum of the object from a HEAD with ``ChecksumMode=ENABLED``:
    whole-object CRC32, SHA-256 or SHA-1, or a composite CRC32 over the parts."""
    kind = head.get("ChecksumType")  # FULL_OBJECT, COMPOSITE, or absent (older stores)
    etag_parts = _etag_parts(file.version)
    for field, algorithm in (("ChecksumCRC32", "crc32"), ("ChecksumSHA256", "sha256"),
                             ("ChecksumSHA1", "sha1")):
        raw = head.get(field)
        if not raw:
            continue
        encoded, _, suffix = str(raw).partition("-")
        try:
            value = base64.b64decode(encoded, validate=True).hex()
        except ValueError:
            continue
        over_parts = bool(suffix) or kind == "COMPOSITE" or (kind is None and etag_parts > 1)
        if not over_parts:
            return Checksum(algorithm, value)
        if algorithm == "crc32":
            parts = int(suffix) if suffix.isdigit() else etag_parts
            return Checksum("s3-composite-crc32", f"{value}-{parts}", parts)
    return None


def _etag_parts(etag: str) -> int:
    """The part count of a multipart ETag (``"...-N"``), 1 for others."""
    _, _, suffix = etag.strip('"').rpartition("-")
    return int(suffix) if suffix.isdigit() else 1


def _remote_file(path: str, obj: dict[str, Any]) -> RemoteFile:
    etag = str(obj.get("ETag", ""))
    value = etag.strip('"').lower()
    checksum: Checksum | None = None
    digest, _, parts = value.partition("-")
    if len(digest) == 32 and all(c in "0123456789abcdef" for c in digest):
        if parts.isdigit():
            checksum = Checksum("s3-multipart-md5", value, int(parts))
        elif not parts:
            checksum = Checksum("md5", value)
    return RemoteFile(path, int(obj["Size"]), etag, checksum)


def s3_client(endpoint_url: str | None) -> Any:
    """The process's S3 client for ``endpoint_url`` (None: boto3's default), as the download
    step's S3 source uses it; other parts of llm-init (the artifact store) share it."""
    return _client(endpoint_url)
