"""A Ray Serve LLM replica whose placement group spans two nodes (``STRICT_SPREAD``), on a real
two-node cluster, with llm-init's builder and vLLM's CPU build: the download runs on each node
of the group, the engine on the replica's bundle."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from typer.testing import CliRunner

from llm_init import read_events, replay
from llm_init.cli import app as cli_app
from llm_init.events import StepProgressed
from llm_init.steps.download.sources import is_tokenizer_file
from llm_init.stores import open_store
from tests.e2e.multinode import TwoNodes, tree, two_node_cluster
from tests.e2e.support import free_port, replica_pythonpath
from tests.support.otlp_receiver import OTLPReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.vllm]
APP = "spanning"


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    pytest.importorskip("vllm")
    with two_node_cluster(tmp_path_factory.mktemp("node-caches")) as nodes:
        yield nodes


def deploy(args: dict[str, Any], http_port: int) -> float:
    """``serve.run`` of llm-init's OpenAI app with ``args``; its seconds."""
    from ray import serve
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    # One proxy, on the head: both nodes share this machine's ports.
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": http_port})
    app = call_user_app_builder_with_args_if_necessary(
        import_attr("llm_init.serve:build_openai_app"), args)
    started = time.perf_counter()
    serve.run(app, name=APP, route_prefix="/")
    return time.perf_counter() - started


def test_a_serve_replica_spanning_two_nodes_downloads_on_each_and_serves(
        two_nodes: TwoNodes, tiny_model: Path, tmp_path: Path) -> None:
    """The replica's node fetches the whole model, the other node of its group only the
    tokenizer (a pre-download hook set ``worker_node_download_model``), each into its own
    cache, each reported in the replica's log; the engine then answers a chat completion."""
    from openai import OpenAI
    from ray import serve

    from llm_init.demo.run import app_args

    receiver = OTLPReceiver().start()
    store = f"sqlite:///{tmp_path / 'events.sqlite'}"
    http_port = free_port()
    args = app_args(tiny_model, event_store=store, settings={
        # The local directory stands for a remote source: each node fetches into its own cache.
        "download_options": {"copy_local_source": True},
        "callback_class": ["tests.e2e.multinode:WorkerNodeDownloads"],
        "callback_kwargs": [{"mode": "TOKENIZER_ONLY"}]},
        llm_config={"placement_group_config": {"bundles": [{"CPU": 1}, {"CPU": 1}],
                                               "strategy": "STRICT_SPREAD"}},
        env={"PYTHONPATH": replica_pythonpath(),
             "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.traces_endpoint,
             "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
             "OTEL_BSP_SCHEDULE_DELAY": "200"})
    try:
        serve_run_s = deploy(args, http_port)
        client = OpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="none")
        chat = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hello!"}], max_tokens=8,
            temperature=0)
        assert chat.usage is not None
        assert chat.usage.completion_tokens > 0
        spans = receiver.wait_for_spans(
            lambda got: sum(x.name == "llm_init.download.node" for x in got) >= 2
            and any(x.name == "llm_init.initialize" for x in got), timeout=60)
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]  # Ray leaves it untyped
        receiver.close()

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
    tokenizer = [f for f in tree(str(tiny_model)) if is_tokenizer_file(f)]
    assert not any(f.endswith(".safetensors") for f in tokenizer)
    completed = {str(e.details["node_id"]): e.details for e in events
                 if isinstance(e, StepProgressed) and e.details.get("stage") == "node_completed"}
    assert set(completed) == {replica_node, other}
    assert completed[other]["files_total"] == len(tokenizer)
    caches = {two_nodes.head: two_nodes.head_cache, two_nodes.worker: two_nodes.worker_cache}
    (local_dir,) = os.listdir(caches[replica_node])
    (worker_dir,) = os.listdir(caches[other])
    assert tree(str(caches[replica_node] / local_dir)) == tree(str(tiny_model))
    assert tree(str(caches[other] / worker_dir)) == tokenizer
    # One trace: each node's download span under the download step, under the root.
    (root,) = [x for x in spans if x.name == "llm_init.initialize"]
    (step,) = [x for x in spans if x.name == "llm_init.step.download"]
    node_spans = {x.attributes["llm_init.node_id"]: x for x in spans
                  if x.name == "llm_init.download.node"}
    assert set(node_spans) == {replica_node, other}
    assert {x.trace_id for x in node_spans.values()} == {root.trace_id} == {r.trace_id}
    assert {x.parent_span_id for x in node_spans.values()} == {step.span_id}
    engine = [x for x in spans if x.trace_id == root.trace_id
              and not x.name.startswith("llm_init.")]
    timeline = CliRunner().invoke(cli_app, ["timeline", init_id, "--store", store],
                                  env={"COLUMNS": "160"})
    print("\n" + timeline.output)
    print(f"vLLM spans in the trace: {sorted({x.name for x in engine})}")
    durations = {d["node_id"]: d["seconds"] for d in completed.values()}
    print(f"\nserve.run {serve_run_s:.1f} s; download per node {durations}; "
          f"phases {r.phase_durations}")
    assert ray.is_initialized()
