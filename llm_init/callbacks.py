"""The public callback protocols: the hooks a callback may implement, and the event observer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from llm_init.context import NodeInitializationContext
    from llm_init.events import Event


@runtime_checkable
class NodeInitializationCallback(Protocol):
    """Hooks around each phase of a node's initialization; implement only the ones you need.

    Hooks may be plain or ``async def``. A pre-hook that returns ``False`` skips that phase's
    default step (``on_pre_initialization`` returning ``False`` skips every default step).
    """

    def on_pre_initialization(self, ctx: NodeInitializationContext) -> bool | None:
        """Fires first, before any phase; may set any writable field, ``False`` skips all steps."""

    def on_pre_download(self, ctx: NodeInitializationContext) -> bool | None:
        """Fires before the model download; may set the download fields, ``False`` skips it."""

    def on_post_download(self, ctx: NodeInitializationContext) -> None:
        """Fires after the download (or its skip); may read or replace ``download_result``."""

    def on_pre_placement_group(self, ctx: NodeInitializationContext) -> bool | None:
        """Fires before the placement group is obtained; may set it, ``False`` skips the step."""

    def on_post_placement_group(self, ctx: NodeInitializationContext) -> None:
        """Fires once the placement group is ready; may inspect it or adjust ``runtime_env``."""

    def on_pre_engine_init(self, ctx: NodeInitializationContext) -> bool | None:
        """Fires before the engine starts; may set ``extra_init_kwargs``, ``False`` skips it."""

    def on_post_engine_init(self, ctx: NodeInitializationContext) -> None:
        """Fires after the engine started; may read ``engine`` and record ``custom_data``."""

    def on_post_initialization(self, ctx: NodeInitializationContext) -> None:
        """Fires last, after every phase succeeded; may read the final context."""


class NodeInitializationCallbackBase:
    """Convenience base class: every hook is a no-op, so subclasses override only what they use."""

    def on_pre_initialization(self, ctx: NodeInitializationContext) -> bool | None:
        """Fires first, before any phase; may set any writable field, ``False`` skips all steps."""
        return None

    def on_pre_download(self, ctx: NodeInitializationContext) -> bool | None:
        """Fires before the model download; may set the download fields, ``False`` skips it."""
        return None

    def on_post_download(self, ctx: NodeInitializationContext) -> None:
        """Fires after the download (or its skip); may read or replace ``download_result``."""

    def on_pre_placement_group(self, ctx: NodeInitializationContext) -> bool | None:
        """Fires before the placement group is obtained; may set it, ``False`` skips the step."""
        return None

    def on_post_placement_group(self, ctx: NodeInitializationContext) -> None:
        """Fires once the placement group is ready; may inspect it or adjust ``runtime_env``."""

    def on_pre_engine_init(self, ctx: NodeInitializationContext) -> bool | None:
        """Fires before the engine starts; may set ``extra_init_kwargs``, ``False`` skips it."""
        return None

    def on_post_engine_init(self, ctx: NodeInitializationContext) -> None:
        """Fires after the engine started; may read ``engine`` and record ``custom_data``."""

    def on_post_initialization(self, ctx: NodeInitializationContext) -> None:
        """Fires last, after every phase succeeded; may read the final context."""


class EventObserver(Protocol):
    """Anything that wants every recorded event (metrics, logs, status); must not raise."""

    def on_event(self, event: Event) -> None: ...
