"""The placement-group step: the group it uses or makes, how long it waits, what it records."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from llm_init import (
    DefaultSteps,
    InMemoryEventStore,
    LLMConfig,
    NodeInitializationContext,
    StepError,
    initialize_node,
    read_events,
)
from llm_init.events import PhaseFailed, StepProgressed
from llm_init.steps.placement import (
    PlacementGroupStep,
    PlacementGroupTimeoutError,
    default_bundles,
    unmet_demand,
)
from tests.support.steps import SettingStep


def test_default_bundles_one_per_worker_unless_given():
    """One bundle per tensor x pipeline parallel worker, GPU where the cluster has GPUs."""
    config = LLMConfig(model_id="m", tensor_parallel_size=2, pipeline_parallel_size=2)
    assert default_bundles(config, gpus_in_cluster=False) == [{"CPU": 1.0}] * 4
    assert default_bundles(config, gpus_in_cluster=True) == [{"GPU": 1.0}] * 4
    given = LLMConfig(model_id="m", placement_bundles=[{"CPU": 2, "GPU": 1}])
    assert default_bundles(given, gpus_in_cluster=True) == [{"CPU": 2, "GPU": 1}]


def test_unmet_demand_names_each_short_resource():
    """Summed over bundles, every resource beyond what is free is named with both numbers."""
    lines = unmet_demand([{"CPU": 4, "GPU": 1}, {"CPU": 4, "GPU": 1}],
                         available={"CPU": 6.0}, total={"CPU": 8.0})
    assert lines == ["CPU: bundles need 8, 6 of 8 free",
                     "GPU: bundles need 2, the cluster has none"]
    assert unmet_demand([{"CPU": 1}], available={"CPU": 1.0}, total={"CPU": 1.0}) == []


def test_without_ray_the_step_says_what_to_do(monkeypatch):
    """Outside a connected Ray the step fails naming ray.init() and the skip hook."""
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    ctx = NodeInitializationContext.for_config("i", LLMConfig(model_id="m"))
    with pytest.raises(StepError, match=r"ray\.init\(\).*on_pre_placement_group"):
        asyncio.run(PlacementGroupStep().run(ctx, lambda **_: None))


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    import ray

    ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def run(config: LLMConfig, step: PlacementGroupStep, store: InMemoryEventStore,
        callbacks: Any = None) -> NodeInitializationContext:
    steps = DefaultSteps(download=SettingStep("download_result", "/models/m"),
                         placement_group=step, engine=SettingStep("engine", "engine"))
    return asyncio.run(initialize_node(config, event_store=store, steps=steps))


def reported(store: InMemoryEventStore) -> dict[str, Any]:
    (init_id,) = store.list_init_ids()
    (event,) = [e for e in read_events(store, init_id) if isinstance(e, StepProgressed)]
    summary: dict[str, Any] = event.details["placement_group"]
    return summary


@pytest.mark.ray
def test_creates_a_group_from_the_parallel_sizes_and_records_its_nodes(ray_cluster):
    """Outside a replica: a group of one bundle per worker, with strategy, each bundle's node,
    and the group itself on the context."""
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    store = InMemoryEventStore()
    config = LLMConfig(model_id="m", tensor_parallel_size=2, placement_strategy="SPREAD")
    ctx = run(config, PlacementGroupStep(), store)
    try:
        assert isinstance(ctx.placement_group, PlacementGroup)
        summary = reported(store)
        node = ray_cluster.get_runtime_context().get_node_id()
        assert summary["id"] == ctx.placement_group.id.hex()
        assert summary["source"] == "created"
        assert summary["strategy"] == "SPREAD"
        assert summary["state"] == "CREATED"
        assert summary["bundles"] == [{"CPU": 1.0}, {"CPU": 1.0}]
        assert {b["node_id"] for b in summary["bundles_to_node"].values()} == {node}
        assert summary["bundles_to_node"].keys() == {"0", "1"}
    finally:
        remove_placement_group(ctx.placement_group)


@pytest.mark.ray
def test_timeout_names_the_unmet_demand_and_frees_the_group(ray_cluster):
    """A group the cluster cannot hold fails the phase after the timeout, saying what is
    missing, and the half-made group is removed."""
    from ray.util.placement_group import placement_group_table

    store = InMemoryEventStore()
    config = LLMConfig(model_id="m", placement_bundles=[{"CPU": 100}],
                       placement_group_timeout_s=1.0)
    with pytest.raises(PlacementGroupTimeoutError) as raised:
        run(config, PlacementGroupStep(), store)
    message = str(raised.value)
    assert "was not ready after 1 s" in message
    assert "CPU: bundles need 100, 8 of 8 free" in message
    (init_id,) = store.list_init_ids()
    (failed,) = [e for e in read_events(store, init_id) if isinstance(e, PhaseFailed)]
    assert failed.phase == "placement_group"
    assert failed.message == message
    states = [t["state"] for t in placement_group_table().values()
              if t["bundles"] == {0: {"CPU": 100.0}}]
    assert states == ["REMOVED"]


@pytest.mark.ray
def test_uses_the_group_a_hook_set(ray_cluster):
    """A placement group set on the context by a hook is waited for and used as it is."""
    from ray.util.placement_group import placement_group, remove_placement_group

    pg = placement_group([{"CPU": 1}])

    class GivesGroup:
        def on_pre_placement_group(self, ctx: NodeInitializationContext) -> None:
            ctx.placement_group = pg

    store = InMemoryEventStore()
    try:
        ctx = run(LLMConfig(model_id="m", callback_class=GivesGroup), PlacementGroupStep(),
                  store)
        assert ctx.placement_group is pg
        assert reported(store)["source"] == "context"
    finally:
        remove_placement_group(pg)


@pytest.mark.ray
def test_inside_a_placement_group_uses_that_group(ray_cluster):
    """In an actor scheduled into a group (as a Serve replica is), the step takes that group."""
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = placement_group([{"CPU": 1}, {"CPU": 1}])

    @ray_cluster.remote(num_cpus=1)
    class Replica:
        def place(self) -> tuple[str, dict[str, Any]]:
            ctx = NodeInitializationContext.for_config("i", LLMConfig(model_id="m"))
            reports: list[dict[str, Any]] = []
            asyncio.run(PlacementGroupStep().run(ctx, lambda **d: reports.append(d)))
            return ctx.placement_group.id.hex(), reports[0]["placement_group"]

    try:
        ray_cluster.get(pg.ready())
        replica = Replica.options(scheduling_strategy=PlacementGroupSchedulingStrategy(pg)
                                  ).remote()
        pg_id, summary = ray_cluster.get(replica.place.remote())
        assert pg_id == pg.id.hex()
        assert summary["source"] == "current"
        assert summary["bundles"] == [{"CPU": 1.0}, {"CPU": 1.0}]
    finally:
        remove_placement_group(pg)
