"""A small two-node Ray cluster for tests of per-node work (a pytest plugin)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def two_ray_nodes() -> Iterator[tuple[str, str]]:
    """A head node and one worker node (one CPU each), connected; yields (head node id, worker
    node id)."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    # Workers import this checkout of llm_init, whatever the environment's install points at.
    ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
             include_dashboard=False, log_to_driver=False)
    try:
        head = ray.get_runtime_context().get_node_id()
        alive = ray.nodes()  # type: ignore[no-untyped-call]  # Ray leaves it untyped
        (worker,) = [n["NodeID"] for n in alive if n["Alive"] and n["NodeID"] != head]
        yield head, worker
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]  # Ray leaves it untyped
