"""``NodeInitializationContext``: the typed, guarded state of one initialization."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llm_init.config import LLMConfig, NodeModelDownloadable
from llm_init.errors import ContextFieldError
from llm_init.summary import json_safe

READ_ONLY_FIELDS = frozenset({"init_id", "llm_config"})
DICT_FIELDS = ("extra_init_kwargs", "custom_data")
# The fields a hook or step may change, in a stable order: what snapshots, diffs and replay see.
RECORDED_FIELDS = (
    "local_node_download_model",
    "worker_node_download_model",
    "download_result",
    "placement_group",
    "runtime_env",
    "extra_init_kwargs",
    "custom_data",
    "engine",
)


@dataclass(slots=True, eq=False)
class NodeInitializationContext:
    """The state hooks and default steps read and change; every change is recorded as an event.

    ``init_id`` and ``llm_config`` are read-only. ``engine`` is set by the engine step.
    """

    init_id: str
    llm_config: LLMConfig
    local_node_download_model: NodeModelDownloadable = NodeModelDownloadable.MODEL_AND_TOKENIZER
    worker_node_download_model: NodeModelDownloadable = NodeModelDownloadable.MODEL_AND_TOKENIZER
    download_result: Any = None
    placement_group: Any = None
    runtime_env: dict[str, Any] | None = None
    extra_init_kwargs: dict[str, Any] = field(default_factory=dict)
    custom_data: dict[str, Any] = field(default_factory=dict)
    engine: Any = None
    _actor: str = field(default="llm_init", init=False, repr=False)
    _sealed: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        self._sealed = True

    @classmethod
    def for_config(cls, init_id: str, llm_config: LLMConfig) -> NodeInitializationContext:
        """A fresh context seeded from the config's defaults. Under a streaming load format
        with a bucket source the download modes start as ``NONE``, as in Ray Serve LLM
        (``llm_init.steps.download.streaming``); hooks may change them."""
        from llm_init.steps.download.streaming import download_modes

        local, worker = download_modes(llm_config)
        return cls(
            init_id=init_id,
            llm_config=llm_config,
            local_node_download_model=local,
            worker_node_download_model=worker,
            runtime_env=dict(llm_config.runtime_env) if llm_config.runtime_env else None,
        )

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or not getattr(self, "_sealed", False):
            object.__setattr__(self, name, value)
            return
        object.__setattr__(self, name, self._checked(name, value))

    def _checked(self, name: str, value: Any) -> Any:
        if name in READ_ONLY_FIELDS:
            raise self._error(name, "is read-only")
        if name in ("local_node_download_model", "worker_node_download_model"):
            try:
                return NodeModelDownloadable(value)
            except ValueError:
                allowed = ", ".join(m.value for m in NodeModelDownloadable)
                raise self._error(name, f"must be one of {allowed}, got {value!r}") from None
        if name == "runtime_env" and value is not None and not isinstance(value, dict):
            raise self._error(name, f"must be a dict or None, got {_qualified(value)}")
        if name in DICT_FIELDS and not isinstance(value, dict):
            raise self._error(name, f"must be a dict, got {_qualified(value)}")
        if name not in RECORDED_FIELDS:
            raise self._error(name, "is not a field of NodeInitializationContext")
        return value

    def _error(self, name: str, problem: str) -> ContextFieldError:
        return ContextFieldError(f"{self._actor} set ctx.{name}, which {problem}")

    def snapshot(self) -> dict[str, Any]:
        """A JSON-safe, redacted copy of the recorded fields: what events and replay compare."""
        return {name: json_safe(getattr(self, name), name) for name in RECORDED_FIELDS}


def _qualified(value: object) -> str:
    """The type of ``value`` as errors name types: ``module.Qualname``."""
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"
