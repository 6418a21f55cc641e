"""Errors of the download step; each message names the source, the file or the node at fault."""

from __future__ import annotations

from llm_init.errors import LLMInitError


class DownloadError(LLMInitError):
    """Fetching a model failed: the source cannot be listed or read, or a node failed."""


class SourceNotFoundError(DownloadError):
    """The model source does not exist or holds no files to fetch."""


class ChecksumMismatchError(DownloadError):
    """A fetched file's bytes do not match the size or checksum the source gave for it."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class OfflineCacheMissError(DownloadError):
    """Offline mode (``HF_HUB_OFFLINE``) is on and the model is in no local cache."""


class LockTimeoutError(DownloadError, TimeoutError):
    """Another process on this node held the model's download lock past the timeout."""


class DownloadStopped(DownloadError):
    """The download was asked to stop: the step was cancelled, or another file failed."""
