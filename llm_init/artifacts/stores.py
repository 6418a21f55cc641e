"""Artifact stores: a small put/get/list interface over a shared directory or an S3 prefix.

Objects are named ``<key>/<name>``. ``put_new`` is the one atomic operation publishing relies on:
it creates an object only if none of that name exists (a hard link on a directory, a conditional
``PUT`` with ``If-None-Match: *`` on S3), so of two writers exactly one wins.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import unquote, urlsplit

from llm_init.errors import ArtifactError
from llm_init.telemetry.redaction import MASK, redact_identifier, redact_text


class ArtifactStoreError(ArtifactError):
    """The artifact store cannot be used: a bad URL, or the store did not answer."""


class ArtifactDeniedError(ArtifactStoreError):
    """The store refused access to an object (S3 ``AccessDenied``/403, a file's permissions)."""


class ArtifactTooLargeError(ArtifactStoreError):
    """An object is larger than the caller's cap; nothing past the cap was kept."""


_CHUNK = 1 << 20
# Retries of one S3 request: a warm start has a deadline of its own, and botocore's default
# (5 attempts of up to 60 s each) would outlive it by minutes.
S3_MAX_ATTEMPTS = 2


class ArtifactStore(Protocol):
    """Objects by name under one location; names are ``/``-separated, relative."""

    @property
    def location(self) -> str:
        """The store's URL with any credential masked: safe for events, spans and logs."""
        ...

    def put(self, name: str, source: Path) -> None:
        """Upload the file ``source`` as ``name`` (replacing an object of that name)."""
        ...

    def put_new(self, name: str, data: bytes) -> bool:
        """Create ``name`` holding ``data`` unless it exists: ``True`` if this call created it."""
        ...

    def get(self, name: str, dest: Path, *, max_bytes: int | None = None) -> bool:
        """Download ``name`` into the file ``dest``; ``False`` if there is no such object.
        ``ArtifactTooLargeError`` once more than ``max_bytes`` arrive (what came stays in
        ``dest``, for the caller to remove); a failure to write ``dest`` is an ``OSError``, a
        failure of the store an ``ArtifactStoreError``."""
        ...

    def read(self, name: str, *, max_bytes: int | None = None) -> bytes | None:
        """The bytes of ``name``, or ``None`` if there is no such object;
        ``ArtifactTooLargeError`` rather than more than ``max_bytes`` of them."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """The names that start with ``prefix``, sorted."""
        ...

    def delete(self, name: str) -> None:
        """Remove ``name`` if it exists."""
        ...


class DirectoryArtifactStore:
    """``file:///shared/dir``: objects are files under the directory."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def location(self) -> str:
        return f"file://{self.root}"

    def _path(self, name: str) -> Path:
        parts = [p for p in name.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise ArtifactStoreError(f"invalid artifact object name {name!r}")
        return self.root.joinpath(*parts)

    def _make_parent(self, dest: Path) -> None:
        # Folders inside the store are made as needed, the store itself never: a missing root
        # is an unmounted share, and filling it would make a store only this node sees.
        if not self.root.is_dir():
            raise ArtifactStoreError(f"artifact_store {self.location!r}: {self.root} does not "
                                     "exist; mount it or create it")
        dest.parent.mkdir(parents=True, exist_ok=True)

    def put(self, name: str, source: Path) -> None:
        dest = self._path(name)
        self._make_parent(dest)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def put_new(self, name: str, data: bytes) -> bool:
        dest = self._path(name)
        self._make_parent(dest)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(tmp, dest)  # atomic, and fails if ``dest`` exists: no overwrite
            except FileExistsError:
                return False
            return True
        finally:
            os.unlink(tmp)

    def get(self, name: str, dest: Path, *, max_bytes: int | None = None) -> bool:
        source = self._path(name)
        try:
            size = source.stat().st_size
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._error(name, exc) from exc
        _check_size(self.location, name, size, max_bytes)
        try:
            # A hard link where the store shares the file system: objects are never rewritten
            # in place (``put`` replaces, ``put_new`` never overwrites), so the link is a copy.
            os.link(source, dest)
            return True
        except FileNotFoundError:
            return False
        except OSError:
            pass
        try:
            reader = source.open("rb")
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise self._error(name, exc) from exc
        with reader:
            copy_bounded(reader, dest, max_bytes, f"{self.location}/{name}")
        return True

    def read(self, name: str, *, max_bytes: int | None = None) -> bytes | None:
        try:
            with self._path(name).open("rb") as source:
                data = source.read() if max_bytes is None else source.read(max_bytes + 1)
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            raise self._error(name, exc) from exc
        _check_size(self.location, name, len(data), max_bytes)
        return data

    def _error(self, name: str, exc: OSError) -> ArtifactStoreError:
        """A failed open or stat of an object: denied for a permission error, else the
        store's."""
        kind = ArtifactDeniedError if isinstance(exc, PermissionError) else ArtifactStoreError
        return kind(f"{self.location}/{name}: {exc.strerror}")

    def list(self, prefix: str = "") -> list[str]:
        if not self.root.is_dir():
            return []
        names = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*")
                 if p.is_file() and not p.name.startswith("."))
        return sorted(n for n in names if n.startswith(prefix))

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)


class S3ArtifactStore:
    """``s3://bucket/prefix``, with the download step's S3 client (endpoint, credentials,
    retries): ``endpoint_url`` overrides ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``."""

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None, *,
                 timeout_s: float | None = None) -> None:
        self.bucket = bucket
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.endpoint_url = (endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                             or os.environ.get("AWS_ENDPOINT_URL"))
        self.timeout_s = timeout_s
        self._client: Any = None

    @property
    def location(self) -> str:
        return redact_identifier(f"s3://{self.bucket}/{self.prefix}".rstrip("/"))

    @property
    def client(self) -> Any:
        if self._client is None:
            if self.timeout_s is None:
                from llm_init.steps.download.s3 import s3_client

                self._client = s3_client(self.endpoint_url)
            else:
                self._client = bounded_s3_client(self.endpoint_url, self.timeout_s)
        return self._client

    def _key(self, name: str) -> str:
        return self.prefix + name.strip("/")

    def put(self, name: str, source: Path) -> None:
        self.client.upload_file(str(source), self.bucket, self._key(name))

    def put_new(self, name: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data,
                                   IfNoneMatch="*")
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            raise
        return True

    def _get_object(self, name: str, max_bytes: int | None) -> Any | None:
        """The open ``GetObject`` response, ``None`` for no such object; its announced length
        is checked against ``max_bytes`` before a byte of the body is read."""
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(name))
        except ClientError as exc:
            if _not_found(exc):
                return None
            raise _store_error(self.location, name, exc) from exc
        except Exception as exc:
            raise ArtifactStoreError(f"{self.location}/{name}: {exc}") from exc
        length = response.get("ContentLength")
        if isinstance(length, int):
            try:
                _check_size(self.location, name, length, max_bytes)
            except ArtifactTooLargeError:
                response["Body"].close()
                raise
        return response

    def get(self, name: str, dest: Path, *, max_bytes: int | None = None) -> bool:
        from boto3.s3.transfer import TransferConfig
        from botocore.exceptions import BotoCoreError, ClientError

        where = f"{self.location}/{name}"
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(name))
        except ClientError as exc:
            if _not_found(exc):
                return False
            raise _store_error(self.location, name, exc) from exc
        except Exception as exc:
            raise ArtifactStoreError(f"{where}: {exc}") from exc
        _check_size(self.location, name, int(head.get("ContentLength") or 0), max_bytes)
        try:
            # boto3's transfer manager (parallel ranged GETs, as fast as the old download)
            # fetches the size the HEAD gave; archives are never rewritten, and the size is
            # checked again below.
            self.client.download_file(
                self.bucket, self._key(name), str(dest),
                Config=TransferConfig(num_download_attempts=S3_MAX_ATTEMPTS))
        except ClientError as exc:
            if _not_found(exc):
                return False
            raise _store_error(self.location, name, exc) from exc
        except BotoCoreError as exc:  # before OSError: botocore's timeouts are OSErrors too
            raise ArtifactStoreError(f"{where}: {exc}") from exc
        except OSError as exc:
            if exc.errno is None or exc.errno in _NETWORK_ERRNOS:
                raise ArtifactStoreError(f"{where}: {exc}") from exc
            raise  # the local disk: full, read-only, over quota
        except Exception as exc:
            raise ArtifactStoreError(f"{where}: {exc}") from exc
        _check_size(self.location, name, dest.stat().st_size, max_bytes)
        return True

    def read(self, name: str, *, max_bytes: int | None = None) -> bytes | None:
        response = self._get_object(name, max_bytes)
        if response is None:
            return None
        with contextlib.closing(response["Body"]) as body:
            try:
                data: bytes = body.read() if max_bytes is None else body.read(max_bytes + 1)
            except Exception as exc:
                raise ArtifactStoreError(f"{self.location}/{name}: {exc}") from exc
        _check_size(self.location, name, len(data), max_bytes)
        return data

    def list(self, prefix: str = "") -> list[str]:
        names: list[str] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix)
        for page in pages:
            names += [obj["Key"][len(self.prefix):] for obj in page.get("Contents", ())]
        return sorted(names)

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(name))


def _not_found(exc: Any) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("NoSuchKey", "404", "NotFound")


_NETWORK_ERRNOS = frozenset({errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED,
                             errno.ETIMEDOUT, errno.EPIPE, errno.EHOSTUNREACH,
                             errno.ENETUNREACH, errno.ENETDOWN, errno.ENOTCONN})
_DENIED = frozenset({"AccessDenied", "403", "Forbidden", "AllAccessDisabled",
                     "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccountProblem"})


def _store_error(location: str, name: str, exc: Any) -> ArtifactStoreError:
    """``exc`` (a botocore ``ClientError``) as ``ArtifactDeniedError`` when S3 refused
    access, else as ``ArtifactStoreError``."""
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    kind = ArtifactDeniedError if code in _DENIED or status == 403 else ArtifactStoreError
    return kind(f"{location}/{name}: {code or status}: {error.get('Message', '')}".rstrip(": "))


def _check_size(location: str, name: str, size: int, max_bytes: int | None) -> None:
    if max_bytes is not None and size > max_bytes:
        raise ArtifactTooLargeError(
            f"{location}/{name} has more than {max_bytes} bytes, the cap")


def copy_bounded(source: BinaryIO | Any, dest: Path, max_bytes: int | None,
                 what: str) -> int:
    """Copy ``source`` into the new file ``dest``, at most ``max_bytes`` of it
    (``ArtifactTooLargeError`` past that); a failed read is the store's
    (``ArtifactStoreError``), a failed write the local disk's (``OSError``)."""
    copied = 0
    with dest.open("wb") as out:
        while True:
            limit = _CHUNK if max_bytes is None else min(_CHUNK, max_bytes + 1 - copied)
            try:
                chunk = source.read(max(limit, 1))
            except PermissionError as exc:
                raise ArtifactDeniedError(f"{what}: {exc}") from exc
            except Exception as exc:
                raise ArtifactStoreError(f"{what}: {exc}") from exc
            if not chunk:
                return copied
            copied += len(chunk)
            if max_bytes is not None and copied > max_bytes:
                raise ArtifactTooLargeError(f"{what} has over {max_bytes} bytes, the cap")
            out.write(chunk)


_bounded_clients: dict[tuple[str | None, float], Any] = {}
_bounded_clients_lock = threading.Lock()


def bounded_s3_client(endpoint_url: str | None, timeout_s: float) -> Any:
    """An S3 client whose every request gives up within about ``timeout_s``: connect and
    read timeouts of at most ``timeout_s`` and ``S3_MAX_ATTEMPTS`` attempts, so a thread
    that fetches for a deadline ends soon after it. One per endpoint and timeout."""
    with _bounded_clients_lock:
        client = _bounded_clients.get((endpoint_url, timeout_s))
        if client is None:
            import boto3
            from botocore.config import Config

            per_try = max(1.0, timeout_s / S3_MAX_ATTEMPTS)
            config = Config(connect_timeout=min(10.0, per_try), read_timeout=min(60.0, per_try),
                            retries={"max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
                            s3={"addressing_style": "path"} if endpoint_url else None)
            client = boto3.session.Session().client("s3", endpoint_url=endpoint_url,
                                                    config=config)
            _bounded_clients[(endpoint_url, timeout_s)] = client
        return client


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A store URL taken apart: ``file`` with the directory in ``root``, or ``s3`` with the
    bucket in ``root`` and the key prefix in ``prefix``; ``credentials`` when the URL carried
    user info (never kept: boto3's credential chain is used)."""

    scheme: str
    root: str
    prefix: str = ""
    credentials: bool = False

    @property
    def location(self) -> str:
        """The URL as shown everywhere: any user info masked whole."""
        if self.scheme == "file":
            return f"file://{self.root}"
        who = f"{MASK}@" if self.credentials else ""
        return f"s3://{who}{self.root}/{self.prefix}".rstrip("/")


def parse_store_url(url: str) -> StoreURL:
    """``url`` taken apart, or a one-line ``ArtifactStoreError`` naming it (credentials
    masked): a file URL needs an absolute path (``file:///dir``), an S3 URL a bucket."""
    if not isinstance(url, str) or not url:
        raise ArtifactStoreError(f"artifact_store must be a non-empty URL, got {url!r}")
    shown = redact_text(url)
    if url.startswith("/"):
        if url.strip("/") == "":
            raise ArtifactStoreError(f"artifact_store {shown!r} names no directory")
        return StoreURL("file", os.path.normpath(url))
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() == "s3":
        head = rest.split("/", 1)[0]
        credentials = ("@" in head or ":" in head) and "@" in rest
        if credentials:
            # User info runs to the last ``@``, whatever it holds: AWS secret keys hold ``/``
            # and ``+``, so splitting at the first ``/`` would make part of one the bucket.
            rest = rest.rpartition("@")[2]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ArtifactStoreError(f"artifact_store {shown!r} names no bucket "
                                     "(s3://bucket/prefix)")
        return StoreURL("s3", bucket, prefix.strip("/"), credentials)
    if sep and scheme.lower() == "file":
        parts = urlsplit(url)
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise ArtifactStoreError(
                f"artifact_store {shown!r}: a file URL needs an absolute path (file:///dir)")
        if path.strip("/") == "":
            raise ArtifactStoreError(
                f"artifact_store {shown!r} names no directory (file:///dir)")
        return StoreURL("file", os.path.normpath(path))
    raise ArtifactStoreError(
        f"artifact_store {shown!r}: unsupported scheme; use file:///dir or s3://bucket/prefix")


def open_artifact_store(url: str, *, endpoint_url: str | None = None,
                        timeout_s: float | None = None) -> ArtifactStore:
    """The store at ``url``: ``file:///dir`` (or a plain absolute path) or
    ``s3://bucket/prefix``; a clear error naming the URL (masked) otherwise. A directory store's
    root must exist: an unmounted shared directory must not become a node-local store that
    every other node misses. ``timeout_s`` bounds each S3 request (connect and read timeouts,
    few retries)."""
    where = parse_store_url(url)
    if where.scheme == "s3":
        return S3ArtifactStore(where.root, where.prefix, endpoint_url, timeout_s=timeout_s)
    if not os.path.isdir(where.root):
        what = "is not a directory" if os.path.exists(where.root) else "does not exist"
        raise ArtifactStoreError(
            f"artifact_store {where.location!r}: {where.root} {what}; mount it or create it")
    return DirectoryArtifactStore(where.root)
