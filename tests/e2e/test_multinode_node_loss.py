"""A node lost while its download runs, on a real two-node Ray cluster (its own cluster: the
test removes the worker node)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
from typer.testing import CliRunner

from llm_init import read_events, replay
from llm_init.cli import app as cli_app
from llm_init.events import InitializationFailed, StepFailed
from llm_init.stores import open_store
from tests.e2e.multinode import Replica, TwoNodes, progress_of, two_node_cluster
from tests.support.models import write_model

pytestmark = [pytest.mark.e2e, pytest.mark.ray]
SHARD = 3_000_000
BANDWIDTH = 1_000_000  # bytes per second per node: the worker's 6 MB take about 6 s


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    with two_node_cluster(tmp_path_factory.mktemp("node-caches")) as nodes:
        yield nodes


def test_losing_the_worker_node_mid_download_fails_naming_it_and_the_next_attempt_succeeds(
        two_nodes: TwoNodes, tmp_path: Path) -> None:
    """The worker node removed while it downloads: the initialization fails with an error
    naming that node and the download step, the log keeps the node's partial progress and has
    nothing left running, and the next attempt succeeds on the head node alone."""
    from ray.util.placement_group import placement_group, placement_group_table
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    source = tmp_path / "source"
    write_model(source, shards=2, shard_size=SHARD)
    store = f"sqlite:///{tmp_path / 'events.sqlite'}"
    # SPREAD, not STRICT_SPREAD: after the loss Ray re-places the lost bundle on the head.
    group = placement_group([{"CPU": 1}, {"CPU": 1}], strategy="SPREAD")
    ray.get(group.ready(), timeout=120)
    bundles = placement_group_table(group)["bundles_to_node_id"]
    assert set(bundles.values()) == {two_nodes.head, two_nodes.worker}
    on_head = next(i for i, node in bundles.items() if node == two_nodes.head)
    replica = Replica.options(num_cpus=1, scheduling_strategy=PlacementGroupSchedulingStrategy(
        group, placement_group_bundle_index=on_head)).remote()
    download = {"max_bandwidth": BANDWIDTH, "progress_interval_s": 0.2}
    first = replica.initialize.remote(str(source), store, init_id="first",
                                      local_mode="TOKENIZER_ONLY", download=download)

    deadline = time.monotonic() + 120
    while not any(p.get("bytes_done", 0) > 0
                  for p in progress_of(store, "first", two_nodes.worker)):
        assert time.monotonic() < deadline, "the worker node never reported progress"
        time.sleep(0.2)
    removed_at = time.monotonic()
    two_nodes.cluster.remove_node(two_nodes.worker_node)
    out = ray.get(first, timeout=300)
    failed_after_s = time.monotonic() - removed_at

    assert two_nodes.worker in out["error"]
    assert "download" in out["error"]
    log = open_store(store, create=False)
    events = read_events(log, "first")
    log.close()
    (step_failed,) = [e for e in events if isinstance(e, StepFailed)]
    (init_failed,) = [e for e in events if isinstance(e, InitializationFailed)]
    assert (step_failed.step, init_failed.phase) == ("download", "download")
    assert two_nodes.worker in step_failed.message
    assert "NodeDiedError" in step_failed.message  # the loss itself, not a retry's error
    worker_progress = progress_of(store, "first", two_nodes.worker)
    assert 0 < max(p["bytes_done"] for p in worker_progress) < 2 * SHARD
    assert not any(p["stage"] == "node_completed" for p in worker_progress)
    timeline = CliRunner().invoke(cli_app, ["timeline", "first", "--store", store],
                                  env={"COLUMNS": "200"})
    print("\n" + timeline.output)
    (lost,) = [line for line in timeline.output.splitlines()
               if f"node {two_nodes.worker[:12]} " in line]
    assert "downloading, unfinished" in lost
    replayed = replay(events)
    assert replayed.outcome == "failed"
    assert [t.name for t in replayed.timeline if t.status == "running"] == []
    spans = {s["attributes"].get("llm_init.node_id"): s for s in out["spans"]
             if s["name"] == "llm_init.download.node"}
    assert spans[two_nodes.worker]["status"] == "ERROR"

    ray.get(group.ready(), timeout=180)  # the lost bundle, placed again on the head
    second = ray.get(replica.initialize.remote(str(source), store, init_id="second",
                                               download=download), timeout=300)
    assert second["error"] == ""
    assert set(second["nodes"]) == {two_nodes.head}
    print(f"\nnode loss: {out['error']!r}, {failed_after_s:.1f} s after remove_node; "
          f"next attempt {second['seconds']:.1f} s")
