"""Specification of the cheap context snapshots behind each hook's diff: reusing summaries must
never hide a change (they exist to keep telemetry's per-hook cost low)."""

from __future__ import annotations

import threading
import time
from typing import Any

from llm_init import (
    ContextChanged,
    HookCompleted,
    InMemoryEventStore,
    LLMConfig,
    NodeInitializationContext,
    initialize_node_sync,
    read_events,
)
from tests.support.steps import local_steps


class InPlace:
    """Mutates nested dicts and lists in place, and changes nothing in one hook."""

    def on_pre_initialization(self, ctx: NodeInitializationContext) -> None:
        ctx.custom_data["nested"] = {"a": [1, 2]}
        ctx.runtime_env = {"env_vars": {"HF_TOKEN": "hf_x", "MODE": "a"}}

    def on_pre_download(self, ctx: NodeInitializationContext) -> None:
        ctx.custom_data["nested"]["a"].append(3)

    def on_post_download(self, ctx: NodeInitializationContext) -> None:
        ctx.download_result["files"] = ["config.json"]

    def on_pre_placement_group(self, ctx: NodeInitializationContext) -> None:
        assert ctx.runtime_env is not None
        ctx.runtime_env["env_vars"]["MODE"] = "b"  # beside a masked secret

    def on_post_placement_group(self, ctx: NodeInitializationContext) -> None:
        ctx.runtime_env["env_vars"]["HF_TOKEN"] = "hf_y"  # type: ignore[index]  # runtime_env may be None

    def on_pre_engine_init(self, ctx: NodeInitializationContext) -> None:
        pass


class LeavesAThread:
    """Starts a thread that changes the context after the hook returned."""

    def on_pre_download(self, ctx: NodeInitializationContext) -> None:
        def later() -> None:
            time.sleep(0.05)
            ctx.custom_data["late"] = True

        threading.Thread(target=later).start()
        ctx.custom_data["early"] = True

    def on_post_download(self, ctx: NodeInitializationContext) -> None:
        deadline = time.monotonic() + 5
        while "late" not in ctx.custom_data and time.monotonic() < deadline:
            time.sleep(0.01)


def changes(callback: type) -> list[tuple[str | None, str, str | None, Any]]:
    store = InMemoryEventStore()
    ctx = initialize_node_sync(LLMConfig(model_id="m", callback_class=callback,
                                         enable_metrics=False),
                               event_store=store, steps=local_steps())
    out = []
    for e in read_events(store, ctx.init_id):
        if isinstance(e, ContextChanged):
            out.append((e.hook, e.field, e.key, e.new))
        elif isinstance(e, HookCompleted) and not e.changed_fields:
            out.append((e.hook, "-", None, None))
    return out


def test_in_place_changes_are_all_recorded() -> None:
    """Nested appends, new keys in a step's dict, and keys beside masked secrets are seen; a
    hook that changed nothing (or only a masked value) records no change."""
    assert changes(InPlace) == [
        ("on_pre_initialization", "runtime_env", None,
         {"env_vars": {"HF_TOKEN": "***", "MODE": "a"}}),
        ("on_pre_initialization", "custom_data", "nested", {"a": [1, 2]}),
        ("on_pre_download", "custom_data", "nested", {"a": [1, 2, 3]}),
        (None, "download_result", None, {"path": "/models/tiny", "bytes": 6000}),
        ("on_post_download", "download_result", None,
         {"path": "/models/tiny", "bytes": 6000, "files": ["config.json"]}),
        ("on_pre_placement_group", "runtime_env", None,
         {"env_vars": {"HF_TOKEN": "***", "MODE": "b"}}),
        (None, "placement_group", None, {"bundles": [{"CPU": 1}]}),
        ("on_post_placement_group", "-", None, None),
        ("on_pre_engine_init", "-", None, None),
        (None, "engine", None, "engine-handle"),
    ]


def test_change_made_after_a_hook_returned_is_recorded_with_a_later_call() -> None:
    """What a hook's thread changes later is recorded too, with the call that saw it."""
    assert changes(LeavesAThread) == [
        ("on_pre_download", "custom_data", "early", True),
        (None, "download_result", None, {"path": "/models/tiny", "bytes": 6000}),
        ("on_post_download", "custom_data", "late", True),
        (None, "placement_group", None, {"bundles": [{"CPU": 1}]}),
        (None, "engine", None, "engine-handle"),
    ]
