"""The download step: a model from a directory, S3 or the Hugging Face Hub onto every node.

``DefaultSteps(download=download_step(...))`` plugs it in; docs/download.md has the details.
Under a streaming load format with a bucket source no node downloads the weights
(``STREAMING_LOAD_FORMATS``, ``is_streaming_load_format``; docs/streaming.md).
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
from llm_init.steps.download.node import (
    CACHE_DIR_ENV,
    NodePlan,
    cache_root,
    download_on_node,
    open_source,
)
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
from llm_init.steps.download.streaming import (
    STREAM_EXTRA,
    STREAMING_LOAD_FORMATS,
    StreamerMissingError,
    download_modes,
    is_bucket_uri,
    is_streaming_load_format,
    require_streamer,
    streaming_reason,
    streams_from_bucket,
)

__all__ = [
    "CACHE_DIR_ENV",
    "STREAMING_LOAD_FORMATS",
    "STREAM_EXTRA",
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
    "StreamerMissingError",
    "cache_root",
    "download_modes",
    "download_on_node",
    "download_step",
    "is_bucket_uri",
    "is_streaming_load_format",
    "is_tokenizer_file",
    "open_source",
    "parse_source",
    "require_streamer",
    "select_files",
    "streaming_reason",
    "streams_from_bucket",
]
