"""A callback that records every hook call, for golden-sequence tests."""

from __future__ import annotations

from typing import Any

from llm_init import NodeInitializationContext

CALLS: list[str] = []


class RecordingCallback:
    """Implements all eight hooks and appends ``Class.hook`` to a shared call log."""

    def __init__(self, tag: str = "cb", returns: dict[str, Any] | None = None,
                 raises_in: str | None = None) -> None:
        self.tag = tag
        self.returns = returns or {}
        self.raises_in = raises_in

    def _hook(self, hook: str, ctx: NodeInitializationContext) -> Any:
        CALLS.append(f"{self.tag}.{hook}")
        if hook == self.raises_in:
            raise ValueError(f"{self.tag} broke in {hook}")
        return self.returns.get(hook)

    def on_pre_initialization(self, ctx: NodeInitializationContext) -> Any:
        return self._hook("on_pre_initialization", ctx)

    def on_pre_download(self, ctx: NodeInitializationContext) -> Any:
        return self._hook("on_pre_download", ctx)

    def on_post_download(self, ctx: NodeInitializationContext) -> Any:
        return self._hook("on_post_download", ctx)

    def on_pre_placement_group(self, ctx: NodeInitializationContext) -> Any:
        return self._hook("on_pre_placement_group", ctx)

    def on_post_placement_group(self, ctx: NodeInitializationContext) -> Any:
        return self._hook("on_post_placement_group", ctx)

    def on_pre_engine_init(self, ctx: NodeInitializationContext) -> Any:
        return self._hook("on_pre_engine_init", ctx)

    def on_post_engine_init(self, ctx: NodeInitializationContext) -> Any:
        return self._hook("on_post_engine_init", ctx)

    def on_post_initialization(self, ctx: NodeInitializationContext) -> Any:
        return self._hook("on_post_initialization", ctx)

