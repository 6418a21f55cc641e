"""Two Ray nodes, one PostgreSQL log: initializations on both nodes land in the same store
and the fleet queries see them apart by node."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_init.fleet import InitQuery, query_initializations
from llm_init.stores import STORE_ENV_VAR, open_store

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")
pytestmark = pytest.mark.ray
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[list[str]]:
    """A head and one worker node (one CPU each); yields their node ids."""
    cluster = cluster_utils.Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    try:
        cluster.wait_for_nodes()
        yield [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()
        cluster.shutdown()


def initialize_here(app: str) -> str:
    """Runs in a Ray worker: one init with stub steps into the store ``runtime_env`` names."""
    from llm_init import LLMConfig, initialize_node_sync, labels
    from tests.support.steps import setting_steps

    node_id = ray.get_runtime_context().get_node_id()
    ctx = initialize_node_sync(
        LLMConfig(model_id="tiny"), steps=setting_steps(),
        labels={labels.APPLICATION: app, labels.DEPLOYMENT: "LLMServer", labels.NODE_ID: node_id})
    return ctx.init_id


def test_replicas_on_two_nodes_write_one_log(two_nodes: list[str], postgres_url: str) -> None:
    """A task pinned to each node initializes into the PostgreSQL URL from ``runtime_env``
    (password from the nodes' environment); a query by node finds each one's init."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    env: dict[str, Any] = {"env_vars": {
        STORE_ENV_VAR: postgres_url,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }}
    task = ray.remote(num_cpus=0)(initialize_here)
    refs = [task.options(runtime_env=env, scheduling_strategy=NodeAffinitySchedulingStrategy(
        node_id, soft=False)).remote("chat") for node_id in two_nodes]
    init_ids = ray.get(refs, timeout=120)
    store = open_store(postgres_url, create=False)
    by_app = query_initializations(store, InitQuery(application="chat"))
    by_node = [query_initializations(store, InitQuery(node_id=n)) for n in two_nodes]
    store.close()
    assert sorted(by_app) == sorted(init_ids)
    assert by_node == [[i] for i in init_ids]
    assert "PGPASSWORD" not in str(env)
