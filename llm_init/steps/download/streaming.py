"""Streaming load formats: vLLM reads the weights from the bucket, so no node downloads them.

As in Ray Serve LLM (``ray.llm._internal.common.utils.download_utils.STREAMING_LOAD_FORMATS``):
with ``engine_kwargs["load_format"]`` one of ``STREAMING_LOAD_FORMATS`` and a bucket
``model_source`` (``s3://``, ``gs://``), every node's download mode starts as ``NONE`` and the
engine is given the bucket URI; vLLM fetches the config and tokenizer itself. Callbacks may
still set other modes on the context; what was decided, and why, is recorded
(``WeightsRouteChosen``). See docs/streaming.md.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from typing import Any

from llm_init.config import NodeModelDownloadable
from llm_init.errors import LLMInitError

STREAMING_LOAD_FORMATS: tuple[str, ...] = ("runai_streamer", "runai_streamer_sharded",
                                           "tensorizer")
BUCKET_SCHEMES: tuple[str, ...] = ("s3://", "gs://")
STREAM_EXTRA = "llm-init[stream]"
# What vLLM's RunAI loaders import, per bucket scheme: the streamer and its storage backend.
# (tensorizer brings its own package, which vLLM names when it is missing.)
RUNAI_FORMATS = ("runai_streamer", "runai_streamer_sharded")
RUNAI_MODULES: dict[str, tuple[str, ...]] = {
    "s3://": ("runai_model_streamer", "runai_model_streamer_s3"),
    "gs://": ("runai_model_streamer", "runai_model_streamer_gcs"),
}
# What the extra ``llm-init[stream]`` installs (S3 only: GCS needs its backend besides).
EXTRA_MODULES = frozenset({"runai_model_streamer", "runai_model_streamer_s3"})
ROUTE_STREAMED = "streamed"  # vLLM reads the weights from the bucket
ROUTE_DOWNLOADED = "downloaded"  # a node's cache holds them; vLLM loads (or streams) that copy


class StreamerMissingError(LLMInitError):
    """A streaming load format was asked for without the package that implements it."""


def load_format_of(llm_config: Any, engine_kwargs: Mapping[str, Any] | None = None) -> str | None:
    """``load_format`` of ``engine_kwargs`` (default: the config's), as a string, or ``None``."""
    kwargs = llm_config.engine_kwargs if engine_kwargs is None else engine_kwargs
    value = kwargs.get("load_format")
    return None if value is None else str(getattr(value, "value", value))


def is_streaming_load_format(llm_config: Any,
                             engine_kwargs: Mapping[str, Any] | None = None) -> bool:
    """Whether the config's engine reads its weights with a streaming load format."""
    return load_format_of(llm_config, engine_kwargs) in STREAMING_LOAD_FORMATS


def is_bucket_uri(uri: str | None) -> bool:
    """Whether ``uri`` names objects in a bucket (``s3://``, ``gs://``)."""
    return bool(uri) and str(uri).startswith(BUCKET_SCHEMES)


def streams_from_bucket(llm_config: Any, engine_kwargs: Mapping[str, Any] | None = None) -> bool:
    """Whether vLLM streams the weights straight from the bucket the config names: a streaming
    load format and a bucket source. Only then does the download leave the weights out."""
    return (is_streaming_load_format(llm_config, engine_kwargs)
            and is_bucket_uri(source_of(llm_config)))


def source_of(llm_config: Any) -> str | None:
    """Where the model comes from, for llm-init's ``LLMConfig`` (``source``) or Ray Serve
    LLM's (``model_loading_config.model_source``: a string or a mirror's ``bucket_uri``)."""
    source = getattr(llm_config, "source", None)
    if isinstance(source, str):
        return source
    loading = getattr(llm_config, "model_loading_config", None)
    found = getattr(loading, "model_source", None)
    if found is not None and not isinstance(found, str):
        found = getattr(found, "bucket_uri", None)
    return found if isinstance(found, str) else None


def streamed_mode(mode: NodeModelDownloadable) -> NodeModelDownloadable:
    """A node's download mode when vLLM streams the weights: ``NONE`` for the default
    ``MODEL_AND_TOKENIZER`` (as Ray Serve LLM's worker nodes get), others as they are."""
    if mode == NodeModelDownloadable.MODEL_AND_TOKENIZER:
        return NodeModelDownloadable.NONE
    return mode


def download_modes(llm_config: Any) -> tuple[NodeModelDownloadable, NodeModelDownloadable]:
    """The local and the worker nodes' download modes an initialization starts with."""
    local = NodeModelDownloadable(llm_config.local_node_download_model)
    worker = NodeModelDownloadable(llm_config.worker_node_download_model)
    if streams_from_bucket(llm_config):
        return streamed_mode(local), streamed_mode(worker)
    return local, worker


def streaming_reason(load_format: str) -> str:
    """The recorded reason no node downloads the weights."""
    return f"weights streamed by vLLM: load_format={load_format}"


def downloaded_reason(load_format: str, modes: Mapping[str, str]) -> str:
    """The recorded reason weights were downloaded although the load format streams."""
    weights = NodeModelDownloadable.MODEL_AND_TOKENIZER.value
    nodes = [node for node, mode in modes.items() if mode == weights]
    return (f"weights downloaded under load_format={load_format}: the context asked node "
            f"{', '.join(nodes)} for {weights}; vLLM reads the local copy")


def require_streamer(load_format: str | None, source: str | None) -> None:
    """Raise ``StreamerMissingError`` (one line, naming the extra) when ``load_format`` needs
    RunAI's streamer for ``source`` and it cannot be imported here."""
    if load_format not in RUNAI_FORMATS:
        return
    scheme = next((s for s in BUCKET_SCHEMES if str(source or "").startswith(s)), None)
    modules = RUNAI_MODULES[scheme] if scheme else RUNAI_MODULES["s3://"][:1]
    for module in modules:
        if not _importable(module):
            package = module.replace("_", "-")
            install = (f"pip install '{STREAM_EXTRA}'" if module in EXTRA_MODULES
                       else f"pip install '{STREAM_EXTRA}' {package}")
            raise StreamerMissingError(
                f"load_format={load_format} needs the package {package}, which is not "
                f"installed here: {install}")


def _importable(module: str) -> bool:
    """Whether ``module`` can be imported, found without importing it: the streamer imports
    torch, seconds that belong to the engine's start, not to the download phase."""
    if module in sys.modules:
        return sys.modules[module] is not None  # None: an import that is to fail
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
