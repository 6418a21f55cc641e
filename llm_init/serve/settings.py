"""``LLMInitSettings``: llm-init's own options for a Ray Serve LLM deployment.

They travel in each Ray ``LLMConfig``'s ``experimental_configs["llm_init"]`` (which is what the
replica reads), and ``build_openai_app`` also takes them once for all models under the
application args' ``"llm_init"`` key; a model's own entry wins key by key.
"""

from __future__ import annotations

import difflib
import pkgutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from llm_init.errors import LLMInitError
from llm_init.liveness import HeartbeatConfigError, heartbeat_interval
from llm_init.steps.base import DefaultStep

SETTINGS_KEY = "llm_init"


class ServeConfigError(LLMInitError):
    """llm-init's settings for a Serve deployment are invalid; the message names the key."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMInitSettings:
    """What llm-init needs besides Ray Serve LLM's own ``LLMConfig``.

    ``event_store``: where events go (``sqlite:///path``, a path, ``memory://``); default
    ``LLM_INIT_EVENT_STORE`` in the replica's environment, else ``.llm-init/events.sqlite``.
    ``callback_class``/``callback_kwargs``/``raise_error_on_callback``/``hook_timeout_s``: llm-init
    callbacks, as in ``llm_init.LLMConfig`` (a class or ``"pkg.module:Class"``, or a list).
    ``download_step``: import path of a callable returning the download step, called with
    ``download_options``; default ``llm_init.steps.download``'s. ``status_port``: serve live
    status as JSON on ``status_host:status_port`` while the replica starts (0 picks a free
    port; ``None``, the default, serves nothing). ``tracing``: set up the OpenTelemetry SDK from
    the replica's ``OTEL_*`` variables. ``metrics``: keep llm-init's metrics.
    ``cpu_in_process_worker``: on the CPU, run a single vLLM worker inside EngineCore.
    ``app_built_at``: Unix time the application was built, which the builders set, so that the
    replica can record how long it waited to be scheduled (``ReplicaLaunched``).
    ``heartbeat_interval_s``: seconds between the replica's heartbeat events while it
    initializes (default ``LLM_INIT_HEARTBEAT_INTERVAL_S``, else 5; 0 turns them off).
    ``artifact_store``: warm starts (``file:///dir``, ``s3://bucket/prefix`` or a mapping of
    ``llm_init.artifacts.settings.ArtifactSettings`` fields); off by default.
    ``overlap_weights``: start the engine while the weight files are still arriving (config
    and tokenizer first; vLLM takes each weight file once it is complete); off by default,
    see docs/overlap.md.
    """

    event_store: str | None = None
    callback_class: Any = None
    callback_kwargs: Any = field(default_factory=dict)
    raise_error_on_callback: bool = True
    hook_timeout_s: float | None = None
    placement_group_timeout_s: float = 300.0
    download_step: str | None = None
    download_options: dict[str, Any] = field(default_factory=dict)
    status_port: int | None = None
    status_host: str = "127.0.0.1"
    tracing: bool = True
    metrics: bool = True
    cpu_in_process_worker: bool = True
    labels: dict[str, str] = field(default_factory=dict)
    app_built_at: float | None = None
    heartbeat_interval_s: float | None = None
    artifact_store: Any = None  # warm starts: a URL or a mapping; see docs/warm-starts.md
    overlap_weights: bool = False

    def __post_init__(self) -> None:
        if self.heartbeat_interval_s is not None:
            try:
                heartbeat_interval(self.heartbeat_interval_s)
            except HeartbeatConfigError as exc:
                raise ServeConfigError(f"llm_init.{exc}") from None
        if self.status_port is not None and not 0 <= int(self.status_port) < 65536:
            raise ServeConfigError(f"llm_init.status_port must be 0-65535, got {self.status_port}")
        if self.artifact_store is not None:
            from llm_init.artifacts.settings import artifact_settings
            from llm_init.errors import CallbackConfigError

            try:
                artifact_settings(self.artifact_store)
            except CallbackConfigError as exc:
                raise ServeConfigError(f"llm_init.{exc}") from exc
        if not isinstance(self.overlap_weights, bool):
            raise ServeConfigError(f"llm_init.overlap_weights must be true or false, got "
                                   f"{self.overlap_weights!r}")
        for name in ("download_options", "labels"):
            if not isinstance(getattr(self, name), Mapping):
                raise ServeConfigError(f"llm_init.{name} must be a mapping")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | LLMInitSettings | None) -> LLMInitSettings:
        """Settings from a dict (YAML args, ``experimental_configs``); unknown keys are errors."""
        if data is None:
            return cls()
        if isinstance(data, LLMInitSettings):
            return data
        if not isinstance(data, Mapping):
            raise ServeConfigError(
                f"llm_init settings must be a mapping, got {qualified_name(type(data))}")
        known = [f.name for f in fields(cls)]
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ServeConfigError(f"unknown llm_init setting {key!r}{hint}")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise ServeConfigError(f"invalid llm_init settings: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def callback_specs(self) -> tuple[list[Any], list[Mapping[str, Any]]]:
        """The llm-init callback classes and one kwargs mapping per class."""
        spec = self.callback_class
        specs: list[Any] = [] if spec is None else (
            [spec] if isinstance(spec, type | str) else list(spec))
        kwargs = self.callback_kwargs
        if isinstance(kwargs, Mapping):
            if len(specs) > 1 and kwargs:
                raise ServeConfigError("llm_init.callback_kwargs must be a list (one mapping per "
                                       "class) when callback_class lists several classes")
            return specs, [kwargs] * len(specs)
        kwargs_list = list(kwargs) if isinstance(kwargs, Sequence) else []
        if len(kwargs_list) != len(specs):
            raise ServeConfigError(f"llm_init.callback_kwargs has {len(kwargs_list)} entries "
                                   f"for {len(specs)} callback classes")
        return specs, kwargs_list

    def download(self) -> DefaultStep:
        """The download step: ``download_step`` if set, else llm-init's default (lazy)."""
        if self.download_step is None:
            from llm_init.steps.ray_vllm import DefaultDownload

            return DefaultDownload(dict(self.download_options))
        factory = import_path(self.download_step, "llm_init.download_step")
        step: DefaultStep = factory(**self.download_options)
        return step


def qualified_name(cls: type) -> str:
    """``module.Qualname`` of a class, as errors name types (``builtins.int``)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def merged(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Settings dicts merged left to right; later layers win key by key."""
    out: dict[str, Any] = {}
    for layer in layers:
        out.update(layer or {})
    return out


def import_path(path: str, what: str) -> Any:
    """``pkg.module:attr`` or ``pkg.module.attr``."""
    try:
        return pkgutil.resolve_name(path)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ServeConfigError(f"{what} {path!r} cannot be imported: {exc}") from exc
