"""A Ray Serve LLM replica whose placement group spans two nodes, streaming its weights from S3
(``load_format=runai_streamer``), on a real two-node cluster with llm-init's builder and vLLM's
CPU build: as in Ray, no node downloads anything, each is recorded as ``NONE``, and the
replica serves from the weights vLLM streamed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_init import read_events, replay
from llm_init.events import StepProgressed, WeightsRouteChosen
from llm_init.stores import open_store
from tests.e2e.multinode import TwoNodes, deploy_app, tree, two_node_cluster
from tests.e2e.support import free_port, replica_pythonpath
from tests.support.s3 import ENV, MotoS3

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.vllm]
APP = "spanning-streamed"


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    pytest.importorskip("vllm")
    with two_node_cluster(tmp_path_factory.mktemp("node-caches")) as nodes:
        yield nodes


def deploy(args: dict[str, Any], http_port: int) -> float:
    return deploy_app(args, http_port, APP)


def test_a_streamed_replica_spanning_two_nodes_downloads_nothing_on_either(
        two_nodes: TwoNodes, tiny_model: Path, tmp_path: Path) -> None:
    """With the weights streamed from S3, the worker node of the replica's group (and the
    replica's own) downloads nothing, each recorded as NONE with the reason, both caches stay
    empty, and the engine answers a chat completion."""
    from openai import OpenAI
    from ray import serve

    from llm_init.demo.run import FAST_ENGINE_KWARGS, app_args

    s3 = MotoS3().start()  # both nodes are on this machine: both reach it on loopback
    source = s3.upload_dir(tiny_model, "models/tiny")
    store = f"sqlite:///{tmp_path / 'events.sqlite'}"
    http_port = free_port()
    args = app_args(tiny_model, event_store=store, llm_config={
        "model_loading_config": {"model_id": "tiny", "model_source": source},
        "engine_kwargs": {**FAST_ENGINE_KWARGS, "load_format": "runai_streamer"},
        "placement_group_config": {"bundles": [{"CPU": 1}, {"CPU": 1}],
                                   "strategy": "STRICT_SPREAD"}},
        env={"PYTHONPATH": replica_pythonpath(), **ENV, "AWS_ENDPOINT_URL": s3.endpoint_url,
             "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0",
             "VLLM_ASSETS_CACHE": str(tmp_path / "vllm-assets")})
    try:
        serve_run_s = deploy(args, http_port)
        client = OpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="none")
        chat = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hello!"}], max_tokens=8,
            temperature=0)
        assert chat.usage is not None
        assert chat.usage.completion_tokens > 0
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]  # Ray leaves it untyped
        s3.stop()

    log = open_store(store, create=False)
    try:
        (init_id,) = log.list_init_ids()
        events = read_events(log, init_id)
    finally:
        log.close()
    r = replay(events)
    assert r.outcome == "completed"
    replica_node = r.labels["node_id"]
    other = ({two_nodes.head, two_nodes.worker} - {replica_node}).pop()
    (chosen,) = [e for e in events if isinstance(e, WeightsRouteChosen)]
    assert (chosen.route, chosen.reason) == (
        "streamed", "weights streamed by vLLM: load_format=runai_streamer")
    assert chosen.modes == {replica_node: "NONE", other: "NONE"}
    completed = {str(e.details["node_id"]): e.details for e in events
                 if isinstance(e, StepProgressed) and e.details.get("stage") == "node_completed"}
    assert set(completed) == {replica_node, other}
    assert completed[other]["files_total"] == completed[other]["bytes_done"] == 0
    assert completed[other]["ran_in"] == "ray_task"  # the worker node was asked, and fetched 0
    nodes = {n["node_id"]: n for n in r.state["download_result"]["nodes"]}
    assert {(n["what"], n["path"], n["bytes_fetched"]) for n in nodes.values()} == {
        ("NONE", None, 0)}
    assert tree(str(two_nodes.worker_cache)) == tree(str(two_nodes.head_cache)) == []
    models = [e.details["model"] for e in events
              if isinstance(e, StepProgressed) and e.step == "engine" and "model" in e.details]
    assert models == [source]
    print(f"\nserve.run {serve_run_s:.1f} s; phases {r.phase_durations}")
