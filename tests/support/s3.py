"""A real S3 HTTP API on loopback: moto's standalone server, for boto3's own code paths.

    with running_moto_s3() as s3:           # also sets fake credentials in os.environ
        uri = s3.upload_dir(model_dir, "models/tiny")    # "s3://models/tiny"
        ... DownloadStep(endpoint_url=s3.endpoint_url) ...

Objects above ``multipart_threshold`` are uploaded in 8 MiB parts (multipart ETags).
Clients need credentials of any value: ``ENV`` holds fake ones. ``S3Store(endpoint_url)`` has
the same client and upload helpers for a server started elsewhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

MIB = 1024 * 1024
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}


class S3Store:
    """Client and upload helpers for the S3 API at ``endpoint_url``."""

    def __init__(self, endpoint_url: str) -> None:
        self.endpoint_url = endpoint_url

    def client(self, *, checksums: bool = True) -> Any:
        """A boto3 client; ``checksums=False`` uploads without the CRC32 that boto3 adds by
        default, as older clients did (then only the ETag describes an object)."""
        import boto3
        from botocore.config import Config

        config = Config(request_checksum_calculation="when_supported" if checksums
                        else "when_required")
        return boto3.client("s3", endpoint_url=self.endpoint_url, config=config,
                            **_credentials())

    def upload_dir(self, local: Path, target: str, *, multipart_threshold: int = 8 * MIB,
                   checksums: bool = True) -> str:
        """Upload every file under ``local`` to ``bucket/prefix``; return its ``s3://`` URI."""
        from boto3.s3.transfer import TransferConfig

        bucket, _, prefix = target.partition("/")
        client = self.client(checksums=checksums)
        if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=bucket)
        config = TransferConfig(multipart_threshold=multipart_threshold,
                                multipart_chunksize=8 * MIB)
        for path in sorted(local.rglob("*")):
            if path.is_file():
                name = f"{prefix}/{path.relative_to(local).as_posix()}".lstrip("/")
                client.upload_file(str(path), bucket, name, Config=config)
        return f"s3://{target}"

    def put(self, uri: str, data: bytes) -> None:
        """Replace one object (``s3://bucket/name``)."""
        bucket, _, name = uri.removeprefix("s3://").partition("/")
        self.client().put_object(Bucket=bucket, Key=name, Body=data)


class MotoS3(S3Store):
    """moto's ``ThreadedMotoServer`` on 127.0.0.1 and a free port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        super().__init__("")
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)

    def start(self) -> MotoS3:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@contextmanager
def running_moto_s3() -> Iterator[MotoS3]:
    """A started ``MotoS3`` with fake credentials in the environment (restored afterwards) and
    no endpoint variables that would point clients elsewhere."""
    import pytest

    with pytest.MonkeyPatch.context() as patch:
        for name, value in ENV.items():
            patch.setenv(name, value)
        for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
            patch.delenv(name, raising=False)
        with MotoS3() as server:
            yield server


def _credentials() -> dict[str, str]:
    return {"aws_access_key_id": ENV["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": ENV["AWS_SECRET_ACCESS_KEY"],
            "region_name": ENV["AWS_DEFAULT_REGION"]}
