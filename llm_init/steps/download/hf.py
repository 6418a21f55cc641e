"""Hugging Face Hub repos as a download source: pinned listing, verified reads, offline cache.

Hugging Face Hub repos through ``huggingface_hub``: a pinned listing, verified ranged reads,
and offline resolution from the local Hub cache.

The endpoint is the step's ``endpoint_url``, else ``HF_ENDPOINT``; the token is the one
``huggingface_hub`` finds (``HF_TOKEN`` or a stored login). ``HF_HUB_OFFLINE`` (read when the
step runs, not only when ``huggingface_hub`` was imported) makes no request at all.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path

from llm_init.steps.download.checksums import Checksum, Verifier, verifier_for
from llm_init.steps.download.errors import (
    DownloadError,
    OfflineCacheMissError,
    SourceNotFoundError,
)
from llm_init.steps.download.sources import Listing, RemoteFile, SourceSpec, sanitize

READ_TIMEOUT_S = 60.0
_TRUE = frozenset({"1", "on", "yes", "true"})


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` is set, as ``huggingface_hub`` reads it."""
    value = os.environ.get("HF_HUB_OFFLINE")
    if value is not None:
        return value.strip().lower() in _TRUE
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """The Hub cache, from the environment as it is now (``HF_HUB_CACHE``, ``HF_HOME``)."""
    if cache := os.environ.get("HF_HUB_CACHE"):
        return Path(cache).expanduser()
    if home := os.environ.get("HF_HOME"):
        return Path(home).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


class HFSource:
    """``org/name`` at a revision (branch, tag or commit), pinned to one commit per listing."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self.repo_id = spec.location
        self.revision = spec.revision or "main"
        self.endpoint = (spec.endpoint_url or os.environ.get("HF_ENDPOINT") or "").rstrip("/")
        self.offline = hub_offline()
        self.commit: str | None = None

    @property
    def cache_name(self) -> str:
        return f"{sanitize('hf', self.repo_id)}@{sanitize(self.revision)}"

    def listing(self) -> Listing:
        if self.offline:
            raise OfflineCacheMissError(f"HF_HUB_OFFLINE is set: cannot list {self.spec.uri}")
        from huggingface_hub import HfApi
        from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

        try:
            info = HfApi(endpoint=self.endpoint or None).model_info(
                self.repo_id, revision=self.revision, files_metadata=True)
        except RepositoryNotFoundError as exc:
            raise SourceNotFoundError(f"no repo {self.spec.uri} on the Hub: {exc}") from exc
        except HfHubHTTPError as exc:
            raise DownloadError(f"cannot list {self.spec.uri}: {exc}") from exc
        self.commit = info.sha
        files = []
        for sibling in info.siblings or ():
            checksum: Checksum | None
            if sibling.lfs is not None:
                checksum = Checksum("sha256", sibling.lfs.sha256.lower())
                size = sibling.lfs.size
            else:
                checksum = (Checksum("git-blob-sha1", sibling.blob_id.lower())
                            if sibling.blob_id else None)
                size = sibling.size or 0
            files.append(RemoteFile(sibling.rfilename, size, checksum.value if checksum else
                                    f"{info.sha}:{size}", checksum))
        if not files:
            raise SourceNotFoundError(f"{self.spec.uri} has no files")
        return Listing(tuple(files), revision=self.commit)

    def verifier(self, file: RemoteFile) -> Verifier:
        return verifier_for(file.checksum, file.size)

    def read(self, file: RemoteFile, start: int, chunk_size: int) -> Generator[bytes]:
        from huggingface_hub import get_session, hf_hub_url, hf_raise_for_status
        from huggingface_hub.utils import (  # type: ignore[attr-defined]  # a lazy __getattr__ export
            build_hf_headers,
        )

        url = hf_hub_url(self.repo_id, file.path, revision=self.commit or self.revision,
                         endpoint=self.endpoint or None)
        headers = build_hf_headers()
        if start:
            headers["Range"] = f"bytes={start}-"
        with get_session().stream("GET", url, headers=headers, follow_redirects=True,
                                  timeout=READ_TIMEOUT_S) as response:
            hf_raise_for_status(response)
            skip = start if start and response.status_code == 200 else 0  # range ignored
            for chunk in response.iter_bytes(chunk_size):
                if skip:
                    dropped = min(skip, len(chunk))
                    chunk, skip = chunk[dropped:], skip - dropped
                if chunk:
                    yield chunk

    def cached_snapshot(self) -> Path:
        """The snapshot directory of this revision in the local Hub cache (no request made)."""
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            path = snapshot_download(self.repo_id, revision=self.revision,
                                     cache_dir=hub_cache_dir(), local_files_only=True)
        except LocalEntryNotFoundError as exc:
            raise OfflineCacheMissError(
                f"HF_HUB_OFFLINE is set and {self.spec.uri} is neither in the llm-init cache "
                f"nor in the Hub cache at {hub_cache_dir()}") from exc
        return Path(str(path))
