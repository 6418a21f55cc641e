"""Past one node: a replica whose placement group spans two nodes, llm-init against Ray Serve
LLM's own, and the fleet store's append rate with two nodes of two replicas writing at once.

    python benchmarks/multinode.py [--rounds 2] [--only startup|store] [--inits 800]
                                   [--padding-mb 64]

Both parts run on a real two-node ``ray.cluster_utils.Cluster`` on this machine (a head and a
worker node, 4 logical CPUs each, each with its own model cache), as the multi-node e2e tests
start it.

Start-up: each round deploys the tiny random-weight Llama once per arm, in rotating order, with
the same placement group, two ``{"CPU": 1}`` bundles under ``STRICT_SPREAD`` (one per node),
from the same S3-compatible store: moto's S3 server in a process of its own on loopback (both
"nodes" are on this machine, so both reach it), the model under ``s3://models/tiny-llama``,
given to both arms as ``model_loading_config.model_source = {"bucket_uri": ...}``; both nodes'
processes have the endpoint (``AWS_ENDPOINT_URL_S3``) and fake credentials in their
environment, which boto3 reads in either arm. ``ray`` is Ray Serve LLM's ``build_openai_app``
(its node initialization runs a download task on each node of the group, boto3 into the
Hugging Face cache); ``llm-init`` is llm-init's builder fully instrumented (events in SQLite,
spans over OTLP/HTTP, metrics), whose download step fetches the model into each node's own
cache; then the engine runs on the first bundle. Every cache is emptied before each deploy, so
every deploy transfers. The two nodes share this machine's home directory and so Ray Serve
LLM's Hugging Face cache and its download lock (``~/tiny-full.lock``): its second node waits
for the first node's download and finds the files in place, so Ray's arm transfers the model
once per deploy where llm-init's transfers it once per node (on separate machines both would
transfer per node; Ray's ``initialize_node`` also requires every node to report the same
path, which rules out a home of each node's own here). The tiny model's weights are 1.2 MB,
too few for a transfer to register: ``--padding-mb`` adds two random safetensors shards of
that many MiB in all, left out of a ``model.safetensors.index.json`` that maps every real
tensor to ``model.safetensors``, so both arms fetch them and vLLM loads only the real weights.
The wall time runs from the builder call to the first successful completion
(``serve_startup.deploy_once``); a warm-up deploy is not counted. The per-node download times
and bytes are the ones llm-init's log records (``StepProgressed``: stage ``node_completed``'s
``seconds``, the sum of ``bytes_delta``); Ray Serve LLM records none.

Store: four writer actors, two pinned to each node (hard node affinity), append clones of a
real initialization's events (``event_store.template``, about 60 events each, one transaction
per initialization) to one store at once, released together at an agreed instant: a durable
PostgreSQL on loopback (``fsync=on``, ``synchronous_commit=on``), and a durable SQLite file
(WAL, ``synchronous=FULL``) for comparison, which only works because both "nodes" share this
machine's disk. The rate is all events over the span from the first writer's start to the last
one's end; medians of ``--repeat`` runs, each into a fresh schema or file. The same four
writers as plain local processes (``event_store.concurrent_rate``) are given beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ray  # noqa: E402

from benchmarks.event_store import (  # noqa: E402
    Opener,
    _postgres,
    _sqlite_durable,
    clone,
    concurrent_rate,
    fresh_schema,
    postgres,
    postgres_durability,
    template,
)
from benchmarks.serve_startup import (  # noqa: E402
    Run,
    cpu_model,
    deploy_once,
    free_port,
    latest,
    otlp_receiver,
    quiet_clean_process,
)
from llm_init.demo.tiny_model import build_tiny_model  # noqa: E402
from llm_init.events import StepProgressed  # noqa: E402
from llm_init.ray_exit import exit_process  # noqa: E402
from llm_init.replay import read_events  # noqa: E402
from llm_init.stores import open_store  # noqa: E402
from tests.e2e.multinode import TwoNodes, two_node_cluster  # noqa: E402
from tests.support.models import safetensors_bytes  # noqa: E402
from tests.support.s3 import ENV, MotoS3  # noqa: E402

ARMS = ("ray", "llm-init")
SPANNING = {"placement_group_config": {"bundles": [{"CPU": 1}, {"CPU": 1}],
                                       "strategy": "STRICT_SPREAD"}}


# -- start-up of a replica spanning two nodes --------------------------------------------------

@dataclass
class SpanningRun:
    run: Run
    downloads: dict[str, float] = field(default_factory=dict)  # "replica node"/"other node": s
    fetched: dict[str, int] = field(default_factory=dict)  # the same roles: bytes transferred


def node_downloads(store: str, nodes: TwoNodes) -> tuple[dict[str, float], dict[str, int]]:
    """Seconds and bytes fetched of each node's download in the newest initialization of
    ``store``, by the node's role: the replica's node, and the other node of its group."""
    newest = latest(store)
    log = open_store(store, create=False)
    try:
        events = read_events(log, newest.init_id)
    finally:
        log.close()
    replica_node = newest.labels["node_id"]
    progress = [e.details for e in events if isinstance(e, StepProgressed)
                and e.details.get("node_id") in (nodes.head, nodes.worker)]
    seconds = {str(d["node_id"]): float(d["seconds"]) for d in progress
               if d.get("stage") == "node_completed"}
    assert set(seconds) == {nodes.head, nodes.worker}, seconds
    fetched = {node: sum(int(d.get("bytes_delta") or 0) for d in progress
                         if d["node_id"] == node) for node in seconds}

    def role(node: str) -> str:
        return "replica node" if node == replica_node else "other node"

    return ({role(n): s for n, s in seconds.items()}, {role(n): b for n, b in fetched.items()})


def empty_caches(nodes: TwoNodes, hf_home: Path) -> None:
    """llm-init's cache on each node and Ray Serve LLM's (shared) one: every deploy fetches."""
    for cache in (nodes.head_cache, nodes.worker_cache, hf_home):
        shutil.rmtree(cache, ignore_errors=True)


def padded_model(work: Path, padding_mb: int) -> Path:
    """The tiny model with ``padding_mb`` MiB of extra safetensors shards that vLLM does not
    load: an index maps every real tensor to ``model.safetensors`` and names no padding."""
    import random

    model_dir = build_tiny_model(work / "tiny-llama-built")
    target = work / "tiny-llama"
    shutil.copytree(model_dir, target)
    if padding_mb <= 0:
        return target
    with open(target / "model.safetensors", "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    index = {"metadata": {}, "weight_map": {name: "model.safetensors" for name in header
                                            if name != "__metadata__"}}
    (target / "model.safetensors.index.json").write_text(json.dumps(index))
    rng = random.Random(0)
    for i in (1, 2):
        (target / f"padding-{i:05d}-of-00002.safetensors").write_bytes(
            safetensors_bytes(rng, padding_mb * 1024 * 1024 // 2))
    return target


def model_bytes(model_dir: Path) -> int:
    return sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())


def measure_startup(nodes: TwoNodes, rounds: int, warmup: int, work: Path, source: str,
                    hf_home: Path) -> list[SpanningRun]:
    from ray import serve

    model_dir = work / "tiny-llama"  # stands in for the S3 source in the builders' other args
    store = f"sqlite:///{work / 'events.sqlite'}"
    llm_config = {**SPANNING, "model_loading_config": {
        "model_id": "tiny", "model_source": {"bucket_uri": source}}}
    http_port = free_port()
    # One proxy, on the head: both nodes share this machine's ports.
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": http_port})
    runs: list[SpanningRun] = []

    def once(arm: str, round_no: int) -> SpanningRun:
        empty_caches(nodes, hf_home)
        run = deploy_once(arm, round_no, model_dir, store, otlp, http_port,
                          llm_config=llm_config)
        if arm != "llm-init":
            return SpanningRun(run)
        return SpanningRun(run, *node_downloads(store, nodes))

    try:
        with otlp_receiver() as otlp:
            for n in range(warmup):
                warm = once(ARMS[-1], -1 - n)
                print(f"warm-up: {warm.run.arm:<9} wall {warm.run.wall_s:6.1f} s (not counted)",
                      flush=True)
            for round_no in range(rounds):
                order = ARMS[round_no % 2:] + ARMS[:round_no % 2]
                for arm in order:
                    r = once(arm, round_no)
                    runs.append(r)
                    print(f"round {round_no + 1}: {arm:<9} wall {r.run.wall_s:6.1f} s"
                          + "".join(f", download on the {k} {v:.2f} s "
                                    f"({r.fetched[k] / 1e6:.1f} MB)"
                                    for k, v in sorted(r.downloads.items())), flush=True)
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]  # Ray leaves it untyped
    return runs


def med(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def report_startup(runs: list[SpanningRun], rounds: int, size: int) -> None:
    print(f"\nReplica spanning two nodes (STRICT_SPREAD, 2 x {{CPU: 1}}), tiny Llama, "
          f"{size / 1e6:.1f} MB in S3 (moto, loopback), median of {rounds} alternating rounds, "
          f"deploy request to first completion")
    cols = ("wall", "CPU", "initialization", "download", "dl replica node", "dl other node",
            "engine_init")
    print(f"{'arm':<10}" + "".join(f"{c:>17}" for c in cols))
    walls: dict[str, float | None] = {}
    for arm in ARMS:
        rs = [r for r in runs if r.run.arm == arm]
        walls[arm] = med([r.run.wall_s for r in rs])
        row = [walls[arm], med([r.run.cpu_s for r in rs]),
               med([r.run.init_s for r in rs if r.run.init_s is not None]),
               med([r.run.phases["download"] for r in rs if r.run.phases]),
               med([r.downloads["replica node"] for r in rs if r.downloads]),
               med([r.downloads["other node"] for r in rs if r.downloads]),
               med([r.run.phases["engine_init"] for r in rs if r.run.phases])]
        print(f"{arm:<10}" + "".join(f"{'-' if v is None else f'{v:.2f} s':>17}" for v in row))
        for role in ("replica node", "other node"):
            fetched = [r.fetched[role] for r in rs if r.fetched]
            if fetched:
                print(f"{'':<10}fetched on the {role}: "
                      + ", ".join(f"{b / 1e6:.1f} MB" for b in fetched))
    a, b = walls.get("llm-init"), walls.get("ray")
    if a and b:
        print(f"llm-init / Ray Serve LLM, wall (target <= 1.0): {a / b:.3f}")
    print("per run (wall s): " + "; ".join(f"{r.run.arm} {r.run.wall_s:.1f}" for r in runs))


# -- the fleet store's append rate, 2 nodes x 2 writers ----------------------------------------

@ray.remote(num_cpus=0)
class Writer:
    """One replica's writer: its own store connection, its own initializations."""

    def __init__(self, location: str, kind: str) -> None:
        opener: Opener = _postgres if kind == "postgres" else _sqlite_durable
        self.store = opener(location)
        self.logs: list[Any] = []

    def node_id(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def prepare(self, ks: list[int]) -> int:
        base = template()
        self.logs = [clone(base, k) for k in ks]
        return sum(map(len, self.logs))

    def append_all(self, start_at: float) -> tuple[float, float]:
        """Append every prepared initialization from ``start_at`` (epoch seconds) on."""
        time.sleep(max(0.0, start_at - time.time()))
        started = time.time()
        for log in self.logs:
            self.store.append(log)
        return started, time.time()

    def close(self) -> None:
        self.store.close()


def cluster_rate(nodes: TwoNodes, location: str, kind: str, inits: int,
                 env: dict[str, str]) -> float:
    """Events per second of four writers, two per node, appending ``inits`` inits at once."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    placed = [nodes.head, nodes.head, nodes.worker, nodes.worker]
    writers = [Writer.options(  # type: ignore[attr-defined]  # ray.remote's class wrapper
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
        runtime_env={"env_vars": {**env, "PYTHONPATH": str(ROOT)}}).remote(location, kind)
        for node in placed]
    try:
        assert ray.get([w.node_id.remote() for w in writers]) == placed
        events = sum(ray.get([w.prepare.remote(list(range(i, inits, len(writers))))
                              for i, w in enumerate(writers)]))
        start_at = time.time() + 1.0
        spans = ray.get([w.append_all.remote(start_at) for w in writers])
        ray.get([w.close.remote() for w in writers])
    finally:
        for w in writers:
            ray.kill(w)
    return events / (max(e for _, e in spans) - min(s for s, _ in spans))


def measure_store(nodes: TwoNodes, inits: int, repeat: int, work: Path
                  ) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    base = template()
    local_logs = [clone(base, k) for k in range(inits)]
    counter = iter(range(10**6))
    results: dict[str, dict[str, float]] = {}

    def both(name: str, fresh: Callable[[], str], kind: str, opener: Opener,
             env: dict[str, str]) -> None:
        cluster = [cluster_rate(nodes, fresh(), kind, inits, env) for _ in range(repeat)]
        local = [concurrent_rate(fresh, opener, local_logs, 4) for _ in range(repeat)]
        results[name] = {"2 nodes x 2 writer actors": statistics.median(cluster),
                         "4 local writer processes": statistics.median(local)}
        print(f"[{name}] cluster {[round(x) for x in cluster]}, local "
              f"{[round(x) for x in local]} ev/s", file=sys.stderr, flush=True)

    both("SQLite", lambda: f"sqlite://{work / f'{next(counter)}.sqlite'}", "sqlite",
         _sqlite_durable, {})
    durability = {"SQLite": "WAL, synchronous=FULL (fsync at every commit)"}
    with postgres(None) as admin:
        def fresh() -> str:
            return fresh_schema(admin)

        durability["PostgreSQL"] = postgres_durability(admin)
        both("PostgreSQL", fresh, "postgres", _postgres,
             {"PGPASSWORD": os.environ["PGPASSWORD"]})
    return results, durability


def report_store(results: dict[str, dict[str, float]], durability: dict[str, str],
                 per_init: int, inits: int, repeat: int) -> None:
    print(f"\nFleet store append rate, {inits} initializations of {per_init} events, one "
          f"transaction per initialization, median of {repeat} runs (events/s)")
    for store, durable in durability.items():
        print(f"  {store}: {durable}")
    rows = list(next(iter(results.values())))
    print(f"{'':<28}" + "".join(f"{s:>14}" for s in results))
    for row in rows:
        print(f"{row:<28}" + "".join(f"{results[s][row]:>14,.0f}" for s in results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1, help="deploys not counted, first")
    parser.add_argument("--inits", type=int, default=800, help="per store run, all writers")
    parser.add_argument("--repeat", type=int, default=3, help="store runs per figure")
    parser.add_argument("--only", choices=["startup", "store"])
    parser.add_argument("--padding-mb", type=int, default=64,
                        help="extra weight shards vLLM does not load, in MiB")
    args = parser.parse_args()
    quiet_clean_process()
    print(f"{os.cpu_count()} CPUs ({cpu_model()}), Python {sys.version.split()[0]}, "
          f"load average at the start {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="llm-init-bench-") as tmp, MotoS3() as s3:
        work = Path(tmp)
        model_dir = padded_model(work, args.padding_mb)
        source = s3.upload_dir(model_dir, "models/tiny-llama")
        hf_home = work / "hf-home"  # Ray Serve LLM's download target, shared by both nodes
        node_env = {**ENV, "AWS_ENDPOINT_URL_S3": s3.endpoint_url, "HF_HOME": str(hf_home)}
        with two_node_cluster(work / "node-caches", node_env=node_env) as nodes:
            if args.only != "startup":
                results, durability = measure_store(nodes, args.inits, args.repeat, work)
                report_store(results, durability, len(template()), args.inits, args.repeat)
            if args.only != "store":
                runs = measure_startup(nodes, args.rounds, args.warmup, work, source, hf_home)
                report_startup(runs, args.rounds, model_bytes(model_dir))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    # Each Ray cluster this script starts leaves Ray's metric exporter behind (llm_init.ray_exit).
    exit_process(main() or 0)
