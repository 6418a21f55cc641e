"""The README's callback examples, run as written."""

from __future__ import annotations

import time
from typing import Any

import pytest

from llm_init import InMemoryEventStore, LLMConfig, initialize_node_sync, read_events, replay
from tests.conftest import local_steps

my_pg = {"bundles": [{"CPU": 1}], "strategy": "PACK"}
my_env = {"env_vars": {"VLLM_CPU_KVCACHE_SPACE": "1"}}


class CustomDownload:
    def on_pre_download(self, ctx):  # type: ignore[no-untyped-def]  # as the README writes it
        ctx.worker_node_download_model = "MODEL_AND_TOKENIZER"


class Metrics:
    def __init__(self):  # type: ignore[no-untyped-def]  # as the README writes it
        self.start = None

    def on_pre_initialization(self, ctx):  # type: ignore[no-untyped-def]  # as the README writes it
        self.start = time.time()

    def on_post_initialization(self, ctx):  # type: ignore[no-untyped-def]  # as the README writes it
        print(f"Took {time.time() - self.start}s")


class FullCustom:
    def on_pre_initialization(self, ctx):  # type: ignore[no-untyped-def]  # as the README writes it
        ctx.placement_group = my_pg
        ctx.runtime_env = my_env
        return False  # Skip defaults


class RemembersAcrossHooks:
    def on_pre_download(self, ctx: Any) -> None:
        ctx.custom_data["download_started"] = time.monotonic()

    def on_post_engine_init(self, ctx: Any) -> None:
        started = ctx.custom_data["download_started"]
        ctx.custom_data["download_to_engine_s"] = round(time.monotonic() - started, 6)


def test_custom_download_example_sets_the_worker_download_mode() -> None:
    """CustomDownload's assignment lands in the context and in the log."""
    store = InMemoryEventStore()
    ctx = initialize_node_sync(LLMConfig(model_id="m", callback_class=CustomDownload,
                                         worker_node_download_model="TOKENIZER_ONLY"),
                               event_store=store, steps=local_steps())
    assert ctx.worker_node_download_model == "MODEL_AND_TOKENIZER"
    changes = [(e.field, e.old, e.new) for e in read_events(store, ctx.init_id)  # type: ignore[attr-defined]  # a field of the Event subclass read
               if e.TYPE == "ContextChanged" and e.field == "worker_node_download_model"]  # type: ignore[attr-defined]  # a field of the Event subclass read
    assert changes == [("worker_node_download_model", "TOKENIZER_ONLY", "MODEL_AND_TOKENIZER")]


def test_metrics_example_prints_the_duration(capsys: pytest.CaptureFixture[str]) -> None:
    """Metrics keeps state on self between hooks and prints the time taken."""
    initialize_node_sync(LLMConfig(model_id="m", callback_class=Metrics),
                         event_store=InMemoryEventStore(), steps=local_steps())
    assert capsys.readouterr().out.startswith("Took ")


def test_full_custom_example_skips_every_default_step() -> None:
    """FullCustom supplies placement group and runtime env, and no default step runs."""
    steps = local_steps()
    config = LLMConfig(model_id="llama-2-7b", callback_class=FullCustom)
    ctx = initialize_node_sync(config, event_store=InMemoryEventStore(), steps=steps)
    assert ctx.placement_group is my_pg
    assert ctx.runtime_env == my_env
    assert [steps.for_name(n).calls for n in ("download", "placement_group", "engine")] == [0, 0, 0]


def test_custom_data_carries_state_from_one_hook_to_a_later_one() -> None:
    """A value stored on ctx.custom_data in one hook is there in a later hook, and replays."""
    store = InMemoryEventStore()
    ctx = initialize_node_sync(LLMConfig(model_id="m", callback_class=RemembersAcrossHooks),
                               event_store=store, steps=local_steps())
    assert ctx.custom_data["download_to_engine_s"] >= 0
    assert replay(read_events(store, ctx.init_id)).state["custom_data"] == ctx.custom_data
