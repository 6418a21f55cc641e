"""A Ray Serve LLM replica whose placement group spans two nodes, on a real two-node cluster,
with llm-init's builder and vLLM's CPU build: the download runs on each node of the group, the
engine on the replica's bundle; and the worker node lost while it downloads (last: it leaves
the cluster with one node)."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
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
from tests.e2e.multinode import TwoNodes, deploy_app, progress_of, tree, two_node_cluster
from tests.e2e.support import free_port, replica_pythonpath
from tests.support.otlp_receiver import OTLPReceiver
from tests.support.s3 import ENV, MotoS3

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.vllm]
APP = "spanning"
HEAD_ONLY = "llm-init-head"  # a custom resource only the head node has


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    pytest.importorskip("vllm")
    with two_node_cluster(tmp_path_factory.mktemp("node-caches"),
                          head_resources={HEAD_ONLY: 1.0}) as nodes:
        yield nodes


def deploy(args: dict[str, Any], http_port: int) -> float:
    return deploy_app(args, http_port, APP)


def test_a_serve_replica_spanning_two_nodes_downloads_on_each_and_serves(
        two_nodes: TwoNodes, tiny_model: Path, tmp_path: Path) -> None:
    """From an S3 store, the replica's node fetches the whole model, the other node of its
    group only the tokenizer (a pre-download hook set ``worker_node_download_model``), each
    into its own cache, each reported in the replica's log; the engine then answers a chat
    completion."""
    from openai import OpenAI
    from ray import serve

    from llm_init.demo.run import app_args

    receiver = OTLPReceiver().start()
    s3 = MotoS3().start()  # both nodes are on this machine: both reach it on loopback
    source = s3.upload_dir(tiny_model, "models/tiny")
    store = f"sqlite:///{tmp_path / 'events.sqlite'}"
    http_port = free_port()
    args = app_args(tiny_model, event_store=store, settings={
        "download_options": {"endpoint_url": s3.endpoint_url},
        "callback_class": ["tests.e2e.multinode:WorkerNodeDownloads"],
        "callback_kwargs": [{"mode": "TOKENIZER_ONLY"}]},
        llm_config={"model_loading_config": {"model_id": "tiny",
                                             "model_source": {"bucket_uri": source}},
                    "placement_group_config": {"bundles": [{"CPU": 1}, {"CPU": 1}],
                                               "strategy": "STRICT_SPREAD"}},
        env={"PYTHONPATH": replica_pythonpath(), **ENV,
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
    tokenizer = [f for f in tree(str(tiny_model)) if is_tokenizer_file(f)]
    assert not any(f.endswith(".safetensors") for f in tokenizer)
    completed = {str(e.details["node_id"]): e.details for e in events
                 if isinstance(e, StepProgressed) and e.details.get("stage") == "node_completed"}
    assert set(completed) == {replica_node, other}
    assert completed[other]["files_total"] == len(tokenizer)
    # Transferred, not found in place: the other node's bytes fetched are the tokenizer's.
    fetched = {node: sum(int(e.details.get("bytes_delta") or 0) for e in events
                         if isinstance(e, StepProgressed) and e.details.get("node_id") == node)
               for node in completed}
    assert fetched[other] == sum((tiny_model / f).stat().st_size for f in tokenizer) > 0
    assert fetched[replica_node] == sum((tiny_model / f).stat().st_size
                                        for f in tree(str(tiny_model)))
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


def init_ids(store: str) -> list[str]:
    """The initializations in ``store`` so far, oldest first (none before the replica made it)."""
    if not Path(store.removeprefix("sqlite:///")).exists():
        return []
    log = open_store(store, create=False)
    try:
        replayed = [replay(read_events(log, i)) for i in log.list_init_ids()]
    finally:
        log.close()
    oldest = datetime.min.replace(tzinfo=UTC)
    return [r.init_id for r in sorted(replayed, key=lambda r: r.started_at or oldest)]


def test_losing_the_worker_node_mid_download_fails_the_start_and_serve_retries_on_the_head(
        two_nodes: TwoNodes, tiny_model: Path, tmp_path: Path) -> None:
    """The worker node of a replica's group removed while it downloads: the replica's first
    initialization fails naming the node and the download step, with its partial progress in
    the log; Serve starts the replica again, which initializes on the head alone and serves,
    and ``llm-init list``/``status`` show one failed, one completed and nothing running."""
    from openai import OpenAI
    from ray import serve

    from llm_init.demo.run import app_args

    # A copy of its own: a cache entry on each node that no earlier test filled.
    model = shutil.copytree(tiny_model, tmp_path / "model")
    store = f"sqlite:///{tmp_path / 'events.sqlite'}"
    http_port = free_port()
    args = app_args(model, event_store=store, settings={
        # About 6 s per node for the model's 1.2 MB: time to lose the worker mid-download.
        "download_options": {"copy_local_source": True, "max_bandwidth": 200_000,
                             "chunk_size": 64 * 1024, "progress_interval_s": 0.2}},
        # The replica's bundle on the head; SPREAD, not STRICT_SPREAD, so that the next
        # replica's group fits on the head alone.
        llm_config={"placement_group_config": {
            "bundles": [{"CPU": 1, HEAD_ONLY: 0.01}, {"CPU": 1}], "strategy": "SPREAD"}},
        env={"PYTHONPATH": replica_pythonpath()})
    args["ingress_deployment_config"]["ray_actor_options"]["resources"] = {HEAD_ONLY: 0.01}
    outcome: list[float | BaseException] = []

    def run() -> None:
        try:
            outcome.append(deploy(args, http_port))
        except BaseException as exc:  # asserted on below
            outcome.append(exc)

    deploying = threading.Thread(target=run, daemon=True)
    deploying.start()
    try:
        deadline = time.monotonic() + 300
        while not any(p.get("bytes_done", 0) > 0 for i in init_ids(store)
                      for p in progress_of(store, i, two_nodes.worker)):
            assert deploying.is_alive(), f"the deploy ended first: {outcome}"
            assert time.monotonic() < deadline, "the worker node never reported progress"
            time.sleep(0.2)
        removed_at = time.monotonic()
        two_nodes.cluster.remove_node(two_nodes.worker_node)
        messages: list[str] = []  # what `serve status` said meanwhile
        while deploying.is_alive() and time.monotonic() < removed_at + 600:
            app = serve.status().applications.get(APP)
            messages += [d.message for d in (app.deployments.values() if app else ())
                         if d.message and d.message not in messages]
            deploying.join(timeout=0.5)
        served_after_s = time.monotonic() - removed_at
        assert outcome, "serve.run did not return"
        assert not isinstance(outcome[0], BaseException), outcome
        client = OpenAI(base_url=f"http://127.0.0.1:{http_port}/v1", api_key="none")
        completion = client.completions.create(model="tiny", prompt="Hello", max_tokens=4,
                                               temperature=0)
        assert completion.usage is not None
        assert completion.usage.completion_tokens > 0
        print("\nserve status said: " + "\n".join(messages))
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]  # Ray leaves it untyped

    first, *others = init_ids(store)
    log = open_store(store, create=False)
    try:
        failed = replay(read_events(log, first))
        retried = [replay(read_events(log, i)) for i in others]
        second_events = read_events(log, others[-1]) if others else []
    finally:
        log.close()
    assert failed.outcome == "failed"
    assert two_nodes.worker in (failed.error or "")
    assert "download" in (failed.error or "")
    assert [t.name for t in failed.timeline if t.status == "running"] == []
    lost = progress_of(store, first, two_nodes.worker)
    assert max(p["bytes_done"] for p in lost) > 0
    assert not any(p["stage"] == "node_completed" for p in lost)
    (retrying,) = [m for m in messages if "failed to start" in m]
    assert "Retrying" in retrying
    assert two_nodes.worker in retrying
    assert [r.outcome for r in retried] == ["completed"]
    (second,) = retried
    assert second.labels["node_id"] == two_nodes.head
    assert {str(e.details["node_id"]) for e in second_events if isinstance(e, StepProgressed)
            and e.details.get("stage") == "node_completed"} == {two_nodes.head}
    cli = CliRunner()
    listed = cli.invoke(cli_app, ["list", "--store", store, "--json"])
    outcomes = sorted(json.loads(line)["outcome"] for line in listed.output.splitlines())
    assert outcomes == ["completed", "failed"]
    running = cli.invoke(cli_app, ["status", "--store", store, "--json"])
    assert (running.exit_code, running.output.strip()) == (0, "")
    timeline = cli.invoke(cli_app, ["timeline", first, "--store", store],
                          env={"COLUMNS": "200"})
    print("\n" + timeline.output)
    print(f"node loss: {failed.error!r}; served {served_after_s:.1f} s after remove_node, "
          f"{len(retried)} more start(s) of the replica, the next one in "
          f"{second.duration_s:.1f} s")
