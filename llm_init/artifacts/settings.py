"""``ArtifactSettings``: where warm-start artifacts live and how they are restored and published.

``LLMConfig.artifact_store`` (and ``"llm_init": {"artifact_store": ...}`` on Serve) takes a URL
or a mapping of these fields; ``None`` (the default) turns warm starts off.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from llm_init.artifacts.stores import ArtifactStoreError, parse_store_url
from llm_init.errors import CallbackConfigError

DEFAULT_CACHE_DIR = "~/.cache/llm-init/warm"
# Per user, as the cache: a shared directory such as ``/tmp/llm-init`` could be made first by
# another local user, who would then choose what the engine loads.
DEFAULT_MODEL_LINK_DIR = "~/.cache/llm-init/models"
DEFAULT_MAX_BYTES = 4 * 1024**3

if TYPE_CHECKING:
    from llm_init.artifacts.signing import Signer, TrustedKeys


@dataclass(frozen=True, slots=True, kw_only=True)
class ArtifactSettings:
    """``url``: ``file:///shared/dir`` or ``s3://bucket/prefix``; ``endpoint_url``: an
    S3-compatible endpoint (default: ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL``, as the
    download step). ``cache_dir``: each node's local cache root (vLLM's ``VLLM_CACHE_ROOT`` is
    ``cache_dir/<key>``). ``model_link_dir``: the engine loads the model through a link
    ``model_link_dir/<weights digest>`` that is the same on every node, because vLLM's own cache
    key includes the model's path (``None``: the download's own path); it must be a directory
    this process's user owns that no one else may write to, else the link is not made.
    ``timeout_s``: the most a restore may take before the engine starts without it.
    ``max_bytes``: a larger cache is neither published nor restored. ``restore``/``publish``:
    each direction can be turned off (a production replica restores only).

    Signing (see docs/warm-starts.md, "Signed artifacts"): ``signing_key`` is the path of a
    publisher's Ed25519 private key (PEM or OpenSSH), or ``signing_key_env`` the name of an
    environment variable holding it; never the key itself. ``trusted_keys``: the public keys a
    reader trusts (paths, PEM text or ``ssh-ed25519`` lines). ``require_signature``: refuse
    unsigned artifacts; ``None`` (the default) means on whenever ``trusted_keys`` are given."""

    url: str
    endpoint_url: str | None = None
    cache_dir: str = DEFAULT_CACHE_DIR
    model_link_dir: str | None = DEFAULT_MODEL_LINK_DIR
    timeout_s: float = 60.0
    max_bytes: int | None = DEFAULT_MAX_BYTES
    restore: bool = True
    publish: bool = True
    signing_key: str | None = None
    signing_key_env: str | None = None
    trusted_keys: tuple[str, ...] = ()
    require_signature: bool | None = None

    def __post_init__(self) -> None:
        if isinstance(self.trusted_keys, str):
            object.__setattr__(self, "trusted_keys", (self.trusted_keys,))
        elif isinstance(self.trusted_keys, list | tuple):
            object.__setattr__(self, "trusted_keys", tuple(self.trusted_keys))
        self._check_signing()
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

    def _check_signing(self) -> None:
        for name in ("signing_key", "signing_key_env"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise CallbackConfigError(f"artifact_store.{name} must be a non-empty string")
            if isinstance(value, str) and "PRIVATE KEY" in value:
                # the settings travel in configs and events: the key itself must not
                raise CallbackConfigError(
                    f"artifact_store.{name} holds a private key; give the path of a file "
                    "holding it (signing_key) or the name of an environment variable "
                    "(signing_key_env) instead")
        if self.signing_key is not None and self.signing_key_env is not None:
            raise CallbackConfigError(
                "artifact_store takes signing_key or signing_key_env, not both")
        if not all(isinstance(k, str) and k for k in self.trusted_keys):
            raise CallbackConfigError(
                "artifact_store.trusted_keys must be a list of paths or public keys")
        if any("PRIVATE KEY" in k for k in self.trusted_keys):
            raise CallbackConfigError(
                "artifact_store.trusted_keys holds a private key; readers need only the "
                "public key")
        if self.require_signature is not None and not isinstance(self.require_signature,
                                                                 bool):
            raise CallbackConfigError(
                "artifact_store.require_signature must be true, false or None, got "
                f"{self.require_signature!r}")
        if self.require_signature and not self.trusted_keys:
            raise CallbackConfigError(
                "artifact_store.require_signature needs trusted_keys: no artifact could be "
                "trusted")

    @property
    def location(self) -> str:
        """The URL with its user info masked whole, whatever characters it holds."""
        return parse_store_url(self.url).location

    @property
    def signatures_required(self) -> bool:
        """Whether unsigned artifacts are refused."""
        return bool(self.trusted_keys) if self.require_signature is None \
            else self.require_signature

    def signer(self) -> Signer | None:
        """The publisher's key, loaded now (``None`` when none is configured); raises
        ``SigningKeyError`` naming the file or variable."""
        from llm_init.artifacts.signing import load_private_key

        if self.signing_key is None and self.signing_key_env is None:
            return None
        return load_private_key(path=self.signing_key, env=self.signing_key_env)

    def trust(self) -> TrustedKeys | None:
        """The reader's trusted keys, loaded now (``None``: signatures are not checked);
        raises ``SigningKeyError`` naming the key that cannot be loaded."""
        from llm_init.artifacts.signing import trusted_keys

        if not self.trusted_keys:
            return None
        return trusted_keys(self.trusted_keys, required=self.signatures_required)


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
