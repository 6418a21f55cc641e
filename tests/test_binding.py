"""Specification of hook binding: a callback may bind one hook as several calls, each with its
own alias and its own moment."""

from __future__ import annotations

from dataclasses import replace

from llm_init import (
    HookCompleted,
    InMemoryEventStore,
    LLMConfig,
    NodeInitializationContext,
    initialize_node_sync,
    read_events,
)
from llm_init.binding import BoundHook
from tests.support.steps import local_steps


class Twice:
    """Binds its download hook as two calls, the second under an alias and only when due."""

    def __init__(self, due: bool) -> None:
        self.due = due

    def on_pre_download(self, ctx: NodeInitializationContext) -> None:
        ctx.custom_data["calls"] = ctx.custom_data.get("calls", 0) + 1

    def llm_init_bound_hook(self, bound: BoundHook) -> tuple[BoundHook, ...]:
        return bound, replace(bound, alias="fetch_files", when=lambda: self.due)


def download_hook(due: bool) -> tuple[list[str | None], int]:
    """The alias of each recorded call of the download hook, and how often it really ran."""
    store = InMemoryEventStore()
    ctx = initialize_node_sync(LLMConfig(model_id="m", callback_class=Twice,
                                         callback_kwargs={"due": due}),
                               event_store=store, steps=local_steps())
    aliases = [e.ray_hook for e in read_events(store, ctx.init_id)
               if isinstance(e, HookCompleted) and e.hook == "on_pre_download"]
    return aliases, ctx.custom_data["calls"]


def test_a_hook_bound_twice_runs_twice_in_order_with_its_alias_recorded() -> None:
    """Both bindings of one hook run, in the order bound, the second recorded under its alias."""
    assert download_hook(due=True) == ([None, "fetch_files"], 2)


def test_a_binding_that_is_not_due_is_neither_called_nor_recorded() -> None:
    """A binding whose ``when`` says no when the hook is due leaves no call and no event."""
    assert download_hook(due=False) == ([None], 1)
