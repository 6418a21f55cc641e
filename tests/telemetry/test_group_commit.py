"""Specification of the recorder's group commit, which keeps events cheap per hook call: fewer
transactions, a running hook still visible in the store, failures still surfacing."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pytest

from llm_init import (
    Event,
    EventStoreError,
    HookStarted,
    InMemoryEventStore,
    LLMConfig,
    NodeInitializationContext,
    initialize_node_sync,
    read_events,
)
from llm_init.stores import StoredEvent
from llm_init.telemetry import names
from tests.support.steps import local_steps


class CountingStore(InMemoryEventStore):
    """An in-memory store that counts its transactions and can fail the n-th."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.appends = 0
        self.fail_at = fail_at

    def append(self, records: Sequence[StoredEvent]) -> None:
        self.appends += 1
        if self.appends == self.fail_at:
            raise EventStoreError("disk full")
        super().append(records)


class Quick:
    def on_pre_download(self, ctx: NodeInitializationContext) -> None: ...
    def on_post_download(self, ctx: NodeInitializationContext) -> None: ...
    def on_pre_engine_init(self, ctx: NodeInitializationContext) -> None: ...
    def on_post_engine_init(self, ctx: NodeInitializationContext) -> None: ...


class Watching:
    """A slow hook that looks for its own ``HookStarted`` in the store while it runs."""

    def __init__(self, store: InMemoryEventStore) -> None:
        self.store = store
        self.seen_after: float | None = None

    def on_pre_download(self, ctx: NodeInitializationContext) -> None:
        started = time.monotonic()
        while time.monotonic() - started < 2.0:
            records = self.store.read(ctx.init_id)
            if records and records[-1].topic == HookStarted.TYPE:
                self.seen_after = time.monotonic() - started
                return
            time.sleep(0.005)


class Collecting:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def on_event(self, event: Event) -> None:
        self.events.append(event)


@pytest.fixture(autouse=True)
def _interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(names.ENV_EVENT_FLUSH_INTERVAL, "0.05")


def run(store: InMemoryEventStore, callback: Any, **kwargs: Any) -> str:
    config = LLMConfig(model_id="m", callback_class=callback, callback_kwargs=kwargs,
                       enable_metrics=False)
    return initialize_node_sync(config, event_store=store, steps=local_steps()).init_id


def test_hook_calls_share_transactions(monkeypatch: pytest.MonkeyPatch) -> None:
    """With group commit a run takes far fewer transactions than without it."""
    grouped = CountingStore()
    run(grouped, Quick)
    monkeypatch.setenv(names.ENV_EVENT_FLUSH_INTERVAL, "0")
    immediate = CountingStore()
    run(immediate, Quick)
    # Immediate: one transaction per start and end of each of 4 hooks and 3 steps, besides
    # the phase boundaries both modes commit at once.
    assert grouped.appends + 10 <= immediate.appends


def test_a_running_hook_is_in_the_store_within_the_interval() -> None:
    """A hook still running is visible (its ``HookStarted`` committed) within the interval."""
    store = InMemoryEventStore()
    config = LLMConfig(model_id="m", callback_class=Watching, callback_kwargs={"store": store},
                       enable_metrics=False)
    initialize_node_sync(config, event_store=store, steps=local_steps())
    (watching,) = config.get_or_create_callbacks()
    assert isinstance(watching, Watching)
    assert watching.seen_after is not None
    assert watching.seen_after < 0.5


def test_a_failing_store_still_fails_the_initialization() -> None:
    """A store error met by the writer thread surfaces in the initialization."""
    with pytest.raises(EventStoreError, match="disk full"):
        run(CountingStore(fail_at=3), Quick)


def test_observers_see_every_event_once_in_order() -> None:
    """Whichever thread commits, observers get the full log in sequence order."""
    store = InMemoryEventStore()
    collecting = Collecting()
    config = LLMConfig(model_id="m", callback_class=Quick, enable_metrics=False)
    ctx = initialize_node_sync(config, event_store=store, steps=local_steps(),
                               observers=[collecting])
    assert [e.sequence for e in collecting.events] == [
        e.sequence for e in read_events(store, ctx.init_id)]
    assert [e.sequence for e in collecting.events] == list(range(1, len(collecting.events) + 1))
