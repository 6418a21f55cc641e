"""A real S3 HTTP API on loopback: moto's standalone server, for boto3's own code paths.

    with running_moto_s3() as s3:           # also sets fake credentials in os.environ
        uri = s3.upload_dir(model_dir, "models/tiny")    # "s3://models/tiny"
        ... DownloadStep(endpoint_url=s3.endpoint_url) ...

Objects above ``multipart_threshold`` are uploaded in 8 MiB parts (multipart ETags).
Clients need credentials of any value: ``ENV`` holds fake ones. ``S3Store(endpoint_url)`` has
the same client and upload helpers for a server started elsewhere. The server runs in a
process of its own (see ``MotoS3``).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.net import free_port

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
    """moto's S3 server on 127.0.0.1 and a free port, in a process of its own.

    Not moto's in-process ``ThreadedMotoServer``: that imports Flask into the test process,
    and vLLM's start-up (``register_triton_kernel_overrides``) then probes every module's
    globals with ``hasattr``, which Flask's ``current_app``/``g``/``request`` proxies answer
    with "Working outside of application context": an in-process engine started after an S3
    test would fail. A separate process keeps Flask out of this one (and off its GIL)."""

    def __init__(self) -> None:
        super().__init__("")
        self._server: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> MotoS3:
        port = free_port()
        self._server = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._server.poll() is not None:
                raise RuntimeError(f"moto's S3 server exited with {self._server.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                time.sleep(0.1)
                continue
            self.endpoint_url = f"http://127.0.0.1:{port}"
            return self
        self.stop()
        raise RuntimeError(f"moto's S3 server did not listen on port {port} in {timeout_s} s")

    def stop(self) -> None:
        if self._server is not None:
            self._server.terminate()
            try:
                self._server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
            self._server = None

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
