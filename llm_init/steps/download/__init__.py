"""The download step: a model from a directory, S3 or the Hugging Face Hub onto every node.

``DefaultSteps(download=download_step(...))`` plugs it in; docs/download.md has the details.
"""

from __future__ import annotations

from llm_init.steps.download.checksums import Checksum
from llm_init.steps.download.errors import (
    ChecksumMismatchError,
    DownloadError,
    DownloadStopped,
    LockTimeoutError,
    OfflineCacheMissError,
    SourceNotFoundError,
)
from llm_init.steps.download.fetch import FetchOptions
from llm_init.steps.download.node import CACHE_DIR_ENV, NodePlan, cache_root, download_on_node
from llm_init.steps.download.progress import NodeProgress
from llm_init.steps.download.result import DownloadResult, NodeDownloadResult
from llm_init.steps.download.sources import (
    Listing,
    RemoteFile,
    SourceSpec,
    is_tokenizer_file,
    parse_source,
    select_files,
)
from llm_init.steps.download.step import DownloadStep, download_step

__all__ = [
    "CACHE_DIR_ENV",
    "Checksum",
    "ChecksumMismatchError",
    "DownloadError",
    "DownloadResult",
    "DownloadStep",
    "DownloadStopped",
    "FetchOptions",
    "Listing",
    "LockTimeoutError",
    "NodeDownloadResult",
    "NodePlan",
    "NodeProgress",
    "OfflineCacheMissError",
    "RemoteFile",
    "SourceNotFoundError",
    "SourceSpec",
    "cache_root",
    "download_on_node",
    "download_step",
    "is_tokenizer_file",
    "parse_source",
    "select_files",
]
