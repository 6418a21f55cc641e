"""Callbacks used by the telemetry tests."""

from __future__ import annotations

from typing import Any

from llm_init import NodeInitializationContext


class Tracing:
    """Changes the context in some hooks and skips the placement group step."""

    def on_pre_download(self, ctx: NodeInitializationContext) -> None:
        ctx.custom_data["note"] = "before download"

    def on_pre_placement_group(self, ctx: NodeInitializationContext) -> bool:
        return False

    def on_post_engine_init(self, ctx: NodeInitializationContext) -> dict[str, Any]:
        ctx.custom_data["engine_ready"] = True
        return {"ok": True}


class Quiet:
    """Does nothing in ``on_pre_download``: the common case of a hook call."""

    def on_pre_download(self, ctx: NodeInitializationContext) -> None:
        return None


class Failing:
    """Raises in ``on_pre_download``, naming a URL with credentials in its message."""

    def on_pre_download(self, ctx: NodeInitializationContext) -> None:
        raise ValueError("cannot reach https://user:hunter2@example.com/models")
