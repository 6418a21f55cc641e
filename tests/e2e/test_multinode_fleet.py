"""One deployment autoscaling from one replica to two under load, on a real two-node cluster
(one replica fills a node), both initializations in one PostgreSQL fleet log and on the
dashboard's queries, run against a real Prometheus scraping both nodes' metrics endpoints."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from llm_init.cli import app as cli_app
from llm_init.replay import list_initializations
from llm_init.stores import open_store
from tests.dashboards import promql
from tests.e2e.multinode import TwoNodes, two_node_cluster
from tests.e2e.support import free_port, replica_pythonpath
from tests.support.prometheus import Prometheus, Result, require_prometheus

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.vllm]
APP = "fleet"
ROOT = Path(__file__).resolve().parents[2]
LOAD_S = 420.0  # the load loop's bound


METRICS_PORTS = (free_port(), free_port())  # Ray's metrics endpoint: head, worker node


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    pytest.importorskip("vllm")
    with two_node_cluster(tmp_path_factory.mktemp("node-caches"),
                          metrics_ports=METRICS_PORTS) as nodes:
        yield nodes


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    """A real Prometheus scraping both nodes' metrics endpoints every second."""
    prom = Prometheus([f"127.0.0.1:{p}" for p in METRICS_PORTS], tmp_path,
                      binary=require_prometheus()).start()
    try:
        yield prom
    finally:
        prom.close()


def panel(title: str, ref_id: str = "A", *, by_instance: bool = False) -> str:
    """The committed dashboard's query of that panel, for the model and over the last half
    hour (the whole test); ``by_instance`` also splits it by scraped endpoint, that is node."""
    (expr,) = [q.expr for q in promql.panel_queries() if (q.panel, q.ref_id) == (title, ref_id)]
    if by_instance:
        assert expr.startswith("sum by (outcome) (")
        expr = expr.replace("sum by (outcome) (", "sum by (outcome, instance) (", 1)
    return promql.substitute(expr, model="tiny", range_="30m")


def values(result: Result, *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(r["metric"].get(x, "") for x in labels): float(r["value"][1]) for r in result}


def load(base_url: str, stop: threading.Event, sent: list[float]) -> None:
    """Chat completions back to back until ``stop``; errors (a replica starting) are retried."""
    from openai import OpenAI

    client = OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=60)
    while not stop.is_set():
        try:
            client.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": "Count to fifty."}],
                max_tokens=64, temperature=0)
            sent.append(time.monotonic())
        except Exception:
            stop.wait(0.5)


def running_replicas() -> int:
    from ray import serve

    status = serve.status().applications.get(APP)
    if status is None:
        return 0
    deployment = status.deployments.get("LLMServer:tiny")
    return 0 if deployment is None else int(deployment.replica_states.get("RUNNING", 0))


def cli(*args: str) -> Any:
    result = CliRunner().invoke(cli_app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def test_a_second_replica_under_load_starts_on_the_other_node_into_the_same_log(
        two_nodes: TwoNodes, tiny_model: Path, postgres_url: str,
        prometheus: Prometheus) -> None:
    """Under a bounded load loop the deployment scales from one replica to two, the second on
    the other node; both initializations are in the one PostgreSQL log with their node,
    ``status --follow``, ``list --application``, ``stats`` and ``diff`` show the pair, and the
    dashboard's queries count two completed initializations, one on each node's endpoint."""
    from ray import serve
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    from llm_init.demo.run import app_args

    http_port = free_port()
    args = app_args(tiny_model, event_store=postgres_url, llm_config={
        # One replica takes a whole node (its 1 CPU merged into the 3 of bundle 0), so the
        # second can only go to the other node.
        "placement_group_config": {"bundles": [{"CPU": 3}]},
        "deployment_config": {"autoscaling_config": {
            "min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1,
            "upscale_delay_s": 0, "downscale_delay_s": 600, "look_back_period_s": 2,
            "metrics_interval_s": 1}}},
        env={"PYTHONPATH": replica_pythonpath()})
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": http_port})
    app = call_user_app_builder_with_args_if_necessary(
        import_attr("llm_init.serve:build_openai_app"), args)
    log = open_store(postgres_url)  # the log exists before anyone follows it
    log.list_init_ids()
    log.close()
    # `status --follow` from before the deployment to after the scale-up: one line per change.
    follow = subprocess.Popen(
        [sys.executable, "-m", "llm_init", "status", "--follow", "--json", "--application", APP,
         "--store", postgres_url, "--timeout", str(LOAD_S + 300)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    started = time.perf_counter()
    stop, sent = threading.Event(), []
    workers: list[threading.Thread] = []
    try:
        serve.run(app, name=APP, route_prefix="/")
        first_s = time.perf_counter() - started
        workers = [threading.Thread(target=load, daemon=True, args=(
            f"http://127.0.0.1:{http_port}/v1", stop, sent)) for _ in range(4)]
        for worker in workers:
            worker.start()
        deadline = time.monotonic() + LOAD_S
        while running_replicas() < 2:
            assert time.monotonic() < deadline, f"no second replica within {LOAD_S} s"
            time.sleep(1)
        second_s = time.perf_counter() - started - first_s
        # While both replicas live (their series go with their processes): what the
        # dashboard shows once Prometheus has scraped the second initialization's end.
        inits, scraped = panel("Initializations in range"), time.perf_counter()
        prometheus.wait_for(inits, lambda r: values(r, "outcome").get(("completed",)) == 2,
                            timeout=60)
        dashboard = {name: prometheus.query(q) for name, q in {
            "count": inits, "by node": panel("Initializations in range", by_instance=True),
            "in progress": panel("Initializations in progress"),
            "phases": panel("Slowest phases in range", "C")}.items()}
        scraped = time.perf_counter() - scraped
    finally:
        stop.set()
        for worker in workers:
            worker.join(70)
        serve.shutdown()  # type: ignore[no-untyped-call]  # Ray leaves it untyped
        follow.terminate()
        followed = [json.loads(line) for line in follow.communicate(timeout=60)[0].splitlines()]

    store = open_store(postgres_url, create=False)
    try:
        inits = [r for r in list_initializations(store, limit=10)
                 if r.labels.get("application") == APP]
    finally:
        store.close()
    assert [r.outcome for r in inits] == ["completed", "completed"]
    assert {r.labels["node_id"] for r in inits} == {two_nodes.head, two_nodes.worker}

    # Following showed each of the pair start and finish, each on its node.
    seen = {(f["init_id"], f["outcome"], f["node_id"]) for f in followed}
    for r in inits:
        assert (r.init_id, "running", r.labels["node_id"]) in seen
        assert (r.init_id, "completed", r.labels["node_id"]) in seen
    listed = [json.loads(line) for line in cli(
        "list", "--application", APP, "--store", postgres_url, "--json").splitlines()]
    assert {i["init_id"] for i in listed} == {r.init_id for r in inits}
    stats = cli("stats", "--store", postgres_url)
    assert re.search(r"total\s+│\s+2\s+│", stats), stats  # n=2 in the total row
    newer, older = inits
    diff = cli("diff", older.init_id, newer.init_id, "--store", postgres_url)
    assert two_nodes.worker[:8] in diff or two_nodes.head[:8] in diff

    # The dashboard: two completed initializations, one per node's endpoint, none running,
    # and each phase ended twice.
    assert values(dashboard["count"], "outcome") == {("completed",): 2}
    assert values(dashboard["by node"], "outcome", "instance") == {
        ("completed", f"127.0.0.1:{port}"): 1 for port in METRICS_PORTS}
    assert sum(values(dashboard["in progress"]).values()) == 0
    phases = values(dashboard["phases"], "phase")
    assert phases[("download",)] == phases[("engine_init",)] == 2, phases
    print(f"\nfirst replica {first_s:.1f} s; second replica under load {second_s:.1f} s later; "
          f"{len(sent)} completions; dashboard queries {scraped:.1f} s after the scale-up: "
          f"{values(dashboard['by node'], 'instance')}, phases {phases}\n"
          + cli("list", "--application", APP, "--store", postgres_url) + stats + diff)
