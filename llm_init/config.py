"""``LLMConfig``: what to initialize, how to place it, and which callbacks run around it."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from llm_init.binding import callback_name, resolve_class, validate_callback_class
from llm_init.errors import CallbackConfigError
from llm_init.telemetry.redaction import exception_message

PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")

CallbackSpec = type | str


class NodeModelDownloadable(StrEnum):
    """What a node fetches of the model: Ray Serve LLM's vocabulary."""

    MODEL_AND_TOKENIZER = "MODEL_AND_TOKENIZER"
    TOKENIZER_ONLY = "TOKENIZER_ONLY"
    NONE = "NONE"


@dataclass
class LLMConfig:
    """The model, its engine and placement settings, and the callbacks of an initialization."""

    model_id: str
    model_source: str | None = None
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    placement_bundles: list[dict[str, float]] | None = None
    placement_strategy: str = "PACK"
    placement_group_timeout_s: float = 300.0
    runtime_env: dict[str, Any] | None = None
    local_node_download_model: NodeModelDownloadable = NodeModelDownloadable.MODEL_AND_TOKENIZER
    worker_node_download_model: NodeModelDownloadable = NodeModelDownloadable.MODEL_AND_TOKENIZER
    callback_class: CallbackSpec | Sequence[CallbackSpec] | None = None
    callback_kwargs: Mapping[str, Any] | Sequence[Mapping[str, Any]] = field(default_factory=dict)
    raise_error_on_callback: bool = True
    hook_timeout_s: float | None = None
    enable_metrics: bool = True
    artifact_store: str | Mapping[str, Any] | None = None  # warm starts; see docs/warm-starts.md
    overlap_weights: bool = False  # start the engine while weights arrive; see docs/overlap.md

    _classes: tuple[type, ...] = field(init=False, repr=False, compare=False, default=())
    _kwargs: tuple[Mapping[str, Any], ...] = field(init=False, repr=False, compare=False,
                                                   default=())
    _instances: dict[int, tuple[object, ...]] = field(init=False, repr=False, compare=False,
                                                      default_factory=dict)
    _lock: threading.Lock = field(init=False, repr=False, compare=False,
                                  default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, str) or not self.model_id:
            raise CallbackConfigError("LLMConfig.model_id must be a non-empty string")
        for name in ("tensor_parallel_size", "pipeline_parallel_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise CallbackConfigError(f"LLMConfig.{name} must be an int >= 1, got {value!r}")
        if self.placement_strategy not in PLACEMENT_STRATEGIES:
            raise CallbackConfigError(
                f"LLMConfig.placement_strategy must be one of {PLACEMENT_STRATEGIES}, "
                f"got {self.placement_strategy!r}"
            )
        if self.hook_timeout_s is not None and self.hook_timeout_s <= 0:
            raise CallbackConfigError("LLMConfig.hook_timeout_s must be positive or None")
        for name in ("local_node_download_model", "worker_node_download_model"):
            try:
                setattr(self, name, NodeModelDownloadable(getattr(self, name)))
            except ValueError as exc:
                raise CallbackConfigError(
                    f"LLMConfig.{name} must be one of {[m.value for m in NodeModelDownloadable]}"
                ) from exc
        self._classes, self._kwargs = _resolve_callbacks(self.callback_class, self.callback_kwargs)
        if self.artifact_store is not None:
            from llm_init.artifacts.settings import artifact_settings

            artifact_settings(self.artifact_store)  # bad settings fail here, naming the key

    @property
    def callback_classes(self) -> tuple[type, ...]:
        """The resolved callback classes, in the order they run."""
        return self._classes

    @property
    def source(self) -> str:
        """Where the model comes from: ``model_source`` or, failing that, ``model_id``."""
        return self.model_source or self.model_id

    def get_or_create_callbacks(self) -> tuple[object, ...]:
        """All configured callback instances, created once per process (thread-safe)."""
        pid = os.getpid()
        with self._lock:
            instances = self._instances.get(pid)
            if instances is None:
                instances = tuple(_create(cls, kwargs)
                                  for cls, kwargs in zip(self._classes, self._kwargs, strict=True))
                self._instances = {pid: instances}
            return instances

    def get_or_create_callback(self) -> object | None:
        """The callback instance of this process: ``None`` if none is configured, the instance
        if one is, and the first one if several are (see ``get_or_create_callbacks``)."""
        instances = self.get_or_create_callbacks()
        return instances[0] if instances else None

    def to_dict(self) -> dict[str, Any]:
        """The public fields, for summaries and Serve application args."""
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}

    def __getstate__(self) -> dict[str, Any]:
        # Instances and the lock belong to one process; Ray ships configs between processes.
        state = {f.name: getattr(self, f.name) for f in fields(self)}
        state["_instances"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)
        object.__setattr__(self, "_lock", threading.Lock())


def _create(cls: type, kwargs: Mapping[str, Any]) -> object:
    """``cls(**kwargs)``; a constructor that raises becomes a ``CallbackConfigError`` naming the
    class and the kwargs' keys (never their values: they may be credentials)."""
    try:
        return cls(**kwargs)
    except Exception as exc:
        keys = ", ".join(sorted(map(str, kwargs))) or "none"
        raise CallbackConfigError(
            f"callback class {callback_name(cls)} could not be created with callback_kwargs "
            f"keys [{keys}]: {exception_message(exc)}"
        ) from exc


def _resolve_callbacks(
    spec: CallbackSpec | Sequence[CallbackSpec] | None,
    kwargs: Mapping[str, Any] | Sequence[Mapping[str, Any]],
) -> tuple[tuple[type, ...], tuple[Mapping[str, Any], ...]]:
    if spec is None:
        specs: list[CallbackSpec] = []
    elif isinstance(spec, type | str):
        specs = [spec]
    else:
        specs = list(spec)
    if isinstance(kwargs, Mapping):
        if len(specs) > 1 and kwargs:
            raise CallbackConfigError(
                "callback_kwargs must be a list (one mapping per class) when callback_class "
                "lists several classes"
            )
        kwargs_list: list[Mapping[str, Any]] = [kwargs] * len(specs)
    else:
        kwargs_list = list(kwargs)
        if len(kwargs_list) != len(specs):
            raise CallbackConfigError(
                f"callback_kwargs has {len(kwargs_list)} entries for {len(specs)} callback classes"
            )
    classes = tuple(resolve_class(s) for s in specs)
    for cls, kw in zip(classes, kwargs_list, strict=True):
        if not isinstance(kw, Mapping):
            raise CallbackConfigError(
                f"callback_kwargs for {cls.__module__}.{cls.__qualname__} must be a mapping")
        validate_callback_class(cls, kw)
    return classes, tuple(kwargs_list)
