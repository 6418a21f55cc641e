"""Initializations on a real two-node Ray cluster (``ray.cluster_utils.Cluster``: a head and a
worker node on this machine, each with its own resources, labels and model cache): per-node
downloads in one trace, a placement group spanning both nodes, and the loss of a node."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from typer.testing import CliRunner

from llm_init import DefaultSteps, InMemoryEventStore, LLMConfig, initialize_node, read_events
from llm_init.cli import app as cli_app
from llm_init.steps.download import DownloadStep
from llm_init.telemetry import names
from tests.e2e.multinode import TwoNodes, two_node_cluster
from tests.support.models import write_model
from tests.support.steps import SettingStep

pytestmark = [pytest.mark.e2e, pytest.mark.ray]
NODE_SPAN = "llm_init.download.node"


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    """A head and one worker node with their own caches; the driver runs on the head."""
    with two_node_cluster(tmp_path_factory.mktemp("node-caches")) as nodes:
        yield nodes


@pytest.fixture
def model(tmp_path: Path) -> Path:
    src = tmp_path / "source"
    write_model(src, shards=2, shard_size=200_000)
    return src


@pytest.fixture
def head_cache(two_nodes: TwoNodes, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The driver downloads the head node's part in process: into the head's cache."""
    monkeypatch.setenv("LLM_INIT_CACHE_DIR", str(two_nodes.head_cache))
    return two_nodes.head_cache


def in_memory_provider() -> tuple[Any, Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def steps(download: DownloadStep) -> DefaultSteps:
    return DefaultSteps(download=download,
                        placement_group=SettingStep("placement_group", None),
                        engine=SettingStep("engine", "engine-handle"))


def test_each_nodes_download_span_goes_to_the_given_tracer_provider(two_nodes, model,
                                                                    head_cache) -> None:
    """With ``tracer_provider=`` (no global SDK provider) the download span of each node, the
    head's in process and the worker's in a Ray task, is a child of the download step in the
    trace under ``llm_init.initialize``."""
    provider, exporter = in_memory_provider()
    config = LLMConfig(model_id="tiny", model_source=str(model))
    asyncio.run(initialize_node(config, event_store=InMemoryEventStore(),
                                steps=steps(DownloadStep(nodes="all", copy_local_source=True)),
                                tracer_provider=provider))
    spans = exporter.get_finished_spans()
    (root,) = [s for s in spans if s.name == names.SPAN_INITIALIZE]
    (step,) = [s for s in spans if s.name == names.SPAN_STEP_PREFIX + "download"]
    nodes = {s.attributes[names.ATTR_NODE_ID]: s for s in spans if s.name == NODE_SPAN}
    assert set(nodes) == {two_nodes.head, two_nodes.worker}
    assert {s.context.trace_id for s in nodes.values()} == {root.context.trace_id}
    assert {s.parent.span_id for s in nodes.values()} == {step.context.span_id}
    assert {n: s.attributes["llm_init.download.ran_in"] for n, s in nodes.items()} == {
        two_nodes.head: "process", two_nodes.worker: "ray_task"}
    for span in nodes.values():  # each node's span lies within the step's
        assert step.start_time <= span.start_time <= span.end_time <= step.end_time


@pytest.fixture
def spread_group(two_nodes: TwoNodes) -> Iterator[Any]:
    """A placement group of one CPU bundle on each node (STRICT_SPREAD), as a Serve replica's
    ``placement_group_config`` reserves it."""
    from ray.util.placement_group import placement_group, remove_placement_group

    group = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    ray.get(group.ready(), timeout=60)
    try:
        yield group
    finally:
        remove_placement_group(group)


def replica_in(group: Any) -> Any:
    """A replica-like actor in bundle 0 of ``group``: its node is the replica's node."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from tests.e2e.multinode import Replica

    return Replica.options(num_cpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(
        group, placement_group_bundle_index=0)).remote()


def node_details(events: list[Any], stage: str) -> dict[str, dict[str, Any]]:
    from llm_init.events import StepProgressed

    return {str(e.details["node_id"]): e.details for e in events
            if isinstance(e, StepProgressed) and e.step == "download"
            and e.details.get("stage") == stage}


def test_a_group_spanning_two_nodes_downloads_each_nodes_part_on_that_node(
        two_nodes, spread_group, model, tmp_path) -> None:
    """A replica whose placement group spans both nodes downloads the whole model on its own
    node and only the tokenizer on the worker node (``worker_node_download_model``), each in
    that node's cache, each node a ``node_completed`` progress event in the one log and a
    download span in the one trace under ``llm_init.initialize``."""
    from tests.e2e.multinode import tree
    from tests.support.models import TOKENIZER_FILES

    replica = replica_in(spread_group)
    replica_node = ray.get(replica.node_id.remote())
    other = ({two_nodes.head, two_nodes.worker} - {replica_node}).pop()
    store = f"sqlite:///{tmp_path / 'events.sqlite'}"
    out = ray.get(replica.initialize.remote(str(model), store, init_id="spanning",
                                            worker_mode="TOKENIZER_ONLY"), timeout=300)
    assert out["error"] == ""
    assert set(out["nodes"]) == {replica_node, other}
    local, worker = out["nodes"][replica_node], out["nodes"][other]
    assert (local["ran_in"], worker["ran_in"]) == ("process", "ray_task")
    assert tree(local["path"]) == sorted(os.listdir(model))
    assert tree(worker["path"]) == sorted(TOKENIZER_FILES)
    # Each part landed in the cache of the node that fetched it.
    caches = {two_nodes.head: two_nodes.head_cache, two_nodes.worker: two_nodes.worker_cache}
    for node_id, node in out["nodes"].items():
        assert Path(node["path"]).parent == caches[node_id]

    events = read_events(_store(store), "spanning")
    completed = node_details(events, "node_completed")
    assert set(completed) == {replica_node, other}
    assert completed[other]["files_total"] == len(TOKENIZER_FILES)
    assert completed[replica_node]["files_total"] == len(os.listdir(model))

    timeline = CliRunner().invoke(cli_app, ["timeline", "spanning", "--store", store],
                                  env={"COLUMNS": "200"})
    print("\n" + timeline.output)
    lines = timeline.output.splitlines()
    (local_line,) = [line for line in lines if f"node {replica_node[:12]} this node" in line]
    (worker_line,) = [line for line in lines if f"node {other[:12]} (ray_task)" in line]
    assert f"{len(os.listdir(model))}/{len(os.listdir(model))} files" in local_line
    assert f"{len(TOKENIZER_FILES)}/{len(TOKENIZER_FILES)} files" in worker_line

    spans = out["spans"]
    (root,) = [s for s in spans if s["name"] == names.SPAN_INITIALIZE]
    (step,) = [s for s in spans if s["name"] == names.SPAN_STEP_PREFIX + "download"]
    node_spans = {s["attributes"][names.ATTR_NODE_ID]: s for s in spans if s["name"] == NODE_SPAN}
    assert set(node_spans) == {replica_node, other}
    assert {s["trace_id"] for s in node_spans.values()} == {root["trace_id"]}
    assert {s["parent"] for s in node_spans.values()} == {step["span_id"]}


def test_a_hook_changing_worker_node_download_model_changes_what_the_worker_node_fetches(
        two_nodes, spread_group, model, tmp_path) -> None:
    """A pre-download hook setting ``worker_node_download_model="NONE"`` leaves the worker
    node with nothing fetched while the replica's node fetches the whole model."""
    replica = replica_in(spread_group)
    replica_node = ray.get(replica.node_id.remote())
    other = ({two_nodes.head, two_nodes.worker} - {replica_node}).pop()
    store = f"sqlite:///{tmp_path / 'events.sqlite'}"
    hook = ("tests.e2e.multinode:WorkerNodeDownloads", {"mode": "NONE"})
    out = ray.get(replica.initialize.remote(str(model), store, init_id="hooked",
                                            callbacks=[hook]), timeout=300)
    assert out["error"] == ""
    assert out["nodes"][other] == {**out["nodes"][other], "path": None, "files": [],
                                   "what": "NONE"}
    assert len(out["nodes"][replica_node]["files"]) == len(os.listdir(model))
    completed = node_details(read_events(_store(store), "hooked"), "node_completed")
    assert completed[other]["files_total"] == 0


def _store(url: str) -> Any:
    from llm_init.stores import open_store

    return open_store(url, create=False)
