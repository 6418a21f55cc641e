"""The download step on a real two-node Ray cluster (a head and one worker node on this
machine): one pinned task per node, placement-group nodes, runtime_env, trace continuation."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from llm_init import LLMConfig, NodeInitializationContext
from llm_init.steps.download import DownloadResult, DownloadStep
from tests.support.models import TOKENIZER_FILES, read_tree, write_model

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("ray-model")
    write_model(src, shards=2, shard_size=100_000)
    return src


def run_step(step: DownloadStep, source: Path, *, placement_group: Any = None,
             runtime_env: dict[str, Any] | None = None,
             local: str = "MODEL_AND_TOKENIZER") -> DownloadResult:
    config = LLMConfig(model_id="tiny", model_source=str(source),
                       local_node_download_model=local)
    ctx = NodeInitializationContext.for_config("init-ray", config)
    ctx.placement_group = placement_group
    ctx.runtime_env = runtime_env
    asyncio.run(step.run(ctx, lambda **details: None))
    result: DownloadResult = ctx.download_result
    return result


def test_one_pinned_task_per_node(two_ray_nodes, model, tmp_path) -> None:
    """With ``local_in_process=False`` each node downloads in a task that ran on that node,
    and the result lists both nodes with the files in place."""
    head, worker = two_ray_nodes
    result = run_step(DownloadStep(cache_dir=tmp_path, nodes="all", local_in_process=False),
                      model)
    assert result.node_ids == (head, worker)  # each id as seen from inside its task
    assert [n.ran_in for n in result.nodes] == ["ray_task", "ray_task"]
    for node in result.nodes:
        assert read_tree(Path(node.path or "")) == read_tree(model)


def test_local_node_in_process_and_worker_node_in_a_task(two_ray_nodes, model, tmp_path,
                                                         monkeypatch) -> None:
    """By default the local node downloads in this process with its own mode (here the
    tokenizer only) and the worker node in a pinned task with the worker mode."""
    head, worker = two_ray_nodes
    monkeypatch.setenv("LLM_INIT_CACHE_DIR", str(tmp_path / "local"))
    result = run_step(DownloadStep(nodes=[worker], copy_local_source=True), model,
                      local="TOKENIZER_ONLY",
                      runtime_env={"env_vars": {"LLM_INIT_CACHE_DIR": str(tmp_path / "w")}})
    local, remote = result.nodes
    assert (local.node_id, local.ran_in, sorted(local.files)) == (head, "process",
                                                                 sorted(TOKENIZER_FILES))
    assert (remote.node_id, remote.ran_in, remote.what) == (worker, "ray_task",
                                                            "MODEL_AND_TOKENIZER")
    # The task ran under the context's runtime_env: its cache is the one named there.
    assert Path(remote.path or "").parent == tmp_path / "w"
    assert Path(local.path or "").parent == tmp_path / "local"


def test_placement_group_nodes_are_downloaded_on(two_ray_nodes, model, tmp_path) -> None:
    """A placement group in the context decides the nodes: here one bundle on each node."""
    from ray.util.placement_group import placement_group, remove_placement_group

    head, worker = two_ray_nodes
    group = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="STRICT_SPREAD")
    try:
        result = run_step(DownloadStep(cache_dir=tmp_path), model, placement_group=group)
    finally:
        remove_placement_group(group)
    assert set(result.node_ids) == {head, worker}


def test_trace_continues_into_every_node(two_ray_nodes, model, tmp_path) -> None:
    """Each node's download, in this process or in a Ray task, runs in the caller's trace."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("initialize") as root:
        result = run_step(DownloadStep(cache_dir=tmp_path, nodes="all"), model)
    trace_id = format(root.get_span_context().trace_id, "032x")
    assert [n.trace_id for n in result.nodes] == [trace_id, trace_id]
    assert [n.ran_in for n in result.nodes] == ["process", "ray_task"]
