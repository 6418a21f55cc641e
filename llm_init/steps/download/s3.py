"""S3 and S3-compatible stores through boto3: listing, ETag verification, ranged reads.

The endpoint is the step's ``endpoint_url``, else what boto3 reads itself from the environment
(``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``); with an endpoint override, requests use
path-style addressing, which S3-compatible stores (MinIO, Ceph, moto) all accept.
Credentials come from boto3's usual chain on each node.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any
from urllib.parse import urlsplit

from llm_init.steps.download.checksums import (
    Checksum,
    MultipartMD5,
    SizeOnly,
    Verifier,
    part_size_candidates,
    verifier_for,
)
from llm_init.steps.download.errors import DownloadError, SourceNotFoundError
from llm_init.steps.download.sources import Listing, RemoteFile, SourceSpec, sanitize

# Connections per client: enough for the fetcher's parallel files plus listing.
MAX_POOL_CONNECTIONS = 32


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
            import boto3
            from botocore.config import Config

            config = Config(
                max_pool_connections=MAX_POOL_CONNECTIONS,
                retries={"max_attempts": 5, "mode": "standard"},
                s3={"addressing_style": "path"} if self.endpoint_url else None,
            )
            self._client = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint_url, config=config)
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
        checksum = file.checksum
        if checksum is None:
            return SizeOnly()
        # One HEAD per file: is the ETag an MD5 at all, and how large is part 1? (No If-Match
        # here: some stores compare it with the part's ETag; the GET checks the version.)
        head = self.client.head_object(Bucket=self.bucket, Key=self._object(file), PartNumber=1)
        if head.get("ServerSideEncryption") == "aws:kms" or head.get("SSECustomerAlgorithm"):
            return SizeOnly()  # the ETags of encrypted objects are not MD5s
        if checksum.algorithm != "s3-multipart-md5":
            return verifier_for(checksum, file.size)
        part_one = int(head.get("ContentLength", 0))
        if 0 < part_one < file.size or checksum.parts == 1:
            return MultipartMD5(checksum, (max(part_one, 1),), authoritative=True)
        # The server did not say how large part 1 is: try the usual part sizes.
        return MultipartMD5(checksum, part_size_candidates(file.size, checksum.parts),
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
            raise

    def _object(self, file: RemoteFile) -> str:
        return self.prefix + file.path


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
