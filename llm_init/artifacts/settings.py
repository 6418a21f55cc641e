"""``ArtifactSettings``: where warm-start artifacts live and how they are restored and published.

``LLMConfig.artifact_store`` (and ``"llm_init": {"artifact_store": ...}`` on Serve) takes a URL
or a mapping of these fields; ``None`` (the default) turns warm starts off.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from llm_init.artifacts.stores import ArtifactStoreError, parse_store_url
from llm_init.errors import CallbackConfigError

DEFAULT_CACHE_DIR = "~/.cache/llm-init/warm"
# Per user, as the cache: a shared directory such as ``/tmp/llm-init`` could be made first by
# another local user, who would then choose what the engine loads.
DEFAULT_MODEL_LINK_DIR = "~/.cache/llm-init/models"
DEFAULT_MAX_BYTES = 4 * 1024**3


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactSettings:
    """``url``: ``file:///shared/dir`` or ``s3://bucket/prefix``; ``endpoint_url``: an
    S3-compatible endpoint (default: ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, as the
    download step). ``cache_dir``: each node's local cache root (vLLM's ``VLLM_CACHE_ROOT`` is
    ``cache_dir/<key>``). ``model_link_dir``: the engine loads the model through a link
    ``model_link_dir/<weights digest>`` that is the same on every node, because vLLM's own cache
    key includes the model's path (``None``: the download's own path); it must be a directory
    this process's user owns that no one else may write to, else the link is not made.
    ``timeout_s``: the most a
    restore may take before the engine starts without it. ``max_bytes``: a larger cache is not
    published. ``restore``/``publish``: each direction can be turned off."""

    url: str
    endpoint_url: str | None = None
    cache_dir: str = DEFAULT_CACHE_DIR
    model_link_dir: str | None = DEFAULT_MODEL_LINK_DIR
    timeout_s: float = 60.0
    max_bytes: int | None = DEFAULT_MAX_BYTES
    restore: bool = True
    publish: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url:
            raise CallbackConfigError("artifact_store.url must be a non-empty URL")
        try:
            parse_store_url(self.url)
        except ArtifactStoreError as exc:
            raise CallbackConfigError(str(exc)) from exc
        if not isinstance(self.timeout_s, int | float) or self.timeout_s <= 0:
            raise CallbackConfigError(
                f"artifact_store.timeout_s must be positive, got {self.timeout_s!r}")
        if self.max_bytes is not None and (not isinstance(self.max_bytes, int)
                                           or self.max_bytes < 0):
            raise CallbackConfigError(
                f"artifact_store.max_bytes must be an int >= 0 or None, got {self.max_bytes!r}")

    @property
    def location(self) -> str:
        """The URL with its user info masked whole, whatever characters it holds."""
        return parse_store_url(self.url).location


def artifact_settings(value: Any) -> ArtifactSettings | None:
    """Settings from a URL, a mapping of ``ArtifactSettings`` fields, settings, or ``None``."""
    if value is None or isinstance(value, ArtifactSettings):
        return value
    if isinstance(value, str):
        return ArtifactSettings(url=value)
    if not isinstance(value, Mapping):
        raise CallbackConfigError(
            f"artifact_store must be a URL or a mapping, got {type(value).__name__}")
    known = [f.name for f in fields(ArtifactSettings)]
    for key in value:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise CallbackConfigError(f"unknown artifact_store setting {key!r}{hint}")
    if "url" not in value:
        raise CallbackConfigError("artifact_store needs a 'url'")
    return ArtifactSettings(**dict(value))
