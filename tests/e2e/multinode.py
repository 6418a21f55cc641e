"""What the multi-node tests run inside Ray: a replica-like actor that initializes in its
placement group (as a Serve replica does), and hooks that act on one node's download."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from llm_init import (
    DefaultSteps,
    LLMConfig,
    NodeInitializationContext,
    initialize_node,
    read_events,
)
from llm_init.events import StepProgressed
from llm_init.steps.download import DownloadStep
from llm_init.steps.placement import PlacementGroupStep
from llm_init.stores import open_store
from tests.support.steps import SettingStep

ROOT = Path(__file__).resolve().parents[2]
STARTS = 3  # tries at starting the cluster


@dataclass(frozen=True)
class TwoNodes:
    cluster: Any  # ray.cluster_utils.Cluster
    worker_node: Any  # the worker's ray._private.node.Node, for remove_node
    head: str
    worker: str
    head_cache: Path
    worker_cache: Path


@contextmanager
def two_node_cluster(caches: Path, *, metrics_ports: tuple[int, int] | None = None,
                     head_resources: dict[str, float] | None = None,
                     node_env: dict[str, str] | None = None) -> Iterator[TwoNodes]:
    """A head and one worker node, 4 logical CPUs each, each with its own model cache (the
    raylet's ``LLM_INIT_CACHE_DIR``, inherited by its workers), this process connected as the
    driver on the head; shut down on the way out. With ``metrics_ports`` (head, worker) each
    node exports Ray's metrics on its own port, reported every second. ``head_resources``:
    custom resources only the head has (to pin a bundle there); ``node_env``: more environment
    for both nodes' processes."""
    from ray.cluster_utils import Cluster

    head_cache, worker_cache = caches / "head", caches / "worker"
    head_env = {**(node_env or {}), "LLM_INIT_CACHE_DIR": str(head_cache)}
    worker_env = {**(node_env or {}), "LLM_INIT_CACHE_DIR": str(worker_cache)}
    head_metrics: dict[str, Any] = {}
    worker_metrics: dict[str, Any] = {}
    if metrics_ports is not None:
        head_metrics = {"metrics_export_port": metrics_ports[0],
                        "_system_config": {"metrics_report_interval_ms": 1000}}
        worker_metrics = {"metrics_export_port": metrics_ports[1]}
    for attempt in range(STARTS):
        cluster = Cluster()
        try:
            # Ray gives a raylet 30 s to register, which a loaded machine can miss: try again.
            cluster.add_node(num_cpus=4, include_dashboard=False,
                             labels={"llm-init-test": "head"}, resources=head_resources or {},
                             env_vars=head_env, **head_metrics)
            worker_node = cluster.add_node(num_cpus=4, labels={"llm-init-test": "worker"},
                                           env_vars=worker_env, **worker_metrics)
            cluster.wait_for_nodes(timeout=120)
            break
        except Exception:
            cluster.shutdown()
            if attempt == STARTS - 1:
                raise
    try:
        # Workers import this checkout of llm_init and these tests, whatever the venv has.
        ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},
                 include_dashboard=False, log_to_driver=False)
        try:
            head = ray.get_runtime_context().get_node_id()
            (worker,) = [n["NodeID"] for n in ray.nodes()
                         if n["Alive"] and n["NodeID"] != head]
            yield TwoNodes(cluster, worker_node, head, worker, head_cache, worker_cache)
        finally:
            ray.shutdown()
    finally:
        cluster.shutdown()


class WorkerNodeDownloads:
    """Sets what the worker nodes download, before the download."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def on_pre_download(self, ctx: NodeInitializationContext) -> None:
        ctx.worker_node_download_model = self.mode  # type: ignore[assignment]  # checked by ctx


@ray.remote
class Replica:
    """Initializes the way a Serve replica does: in the placement group it was scheduled into
    (llm-init's ``ReplicaPlacementGroup`` puts it on the context first), with the real download
    and placement-group steps, spans on a provider of its own."""

    def node_id(self) -> str:
        return str(ray.get_runtime_context().get_node_id())

    def cache_dir(self) -> str:
        return os.environ.get("LLM_INIT_CACHE_DIR", "")

    def initialize(self, source: str, store: str, *, init_id: str,
                   worker_mode: str = "MODEL_AND_TOKENIZER",
                   local_mode: str = "MODEL_AND_TOKENIZER",
                   callbacks: list[tuple[str, dict[str, Any]]] | None = None,
                   download: dict[str, Any] | None = None,
                   labels: dict[str, str] | None = None) -> dict[str, Any]:
        """Run one initialization; return its node result paths and its spans in brief."""
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        from ray.util.placement_group import get_current_placement_group

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        extra = callbacks or []
        config = LLMConfig(
            model_id="tiny", model_source=source,
            local_node_download_model=local_mode,  # type: ignore[arg-type]  # checked there
            worker_node_download_model=worker_mode,  # type: ignore[arg-type]  # checked there
            callback_class=["llm_init.serve.configs:ReplicaPlacementGroup",
                            *(name for name, _ in extra)],
            callback_kwargs=[{"placement_group": get_current_placement_group()},
                             *(kwargs for _, kwargs in extra)])
        # The local directory stands for a remote source: each node fetches into its own cache.
        steps = DefaultSteps(download=DownloadStep(**{"copy_local_source": True,
                                                      **(download or {})}),
                             placement_group=PlacementGroupStep(),
                             engine=SettingStep("engine", "engine-handle"))
        event_store = open_store(store)
        started = time.perf_counter()
        error = ""
        try:
            ctx = asyncio.run(initialize_node(
                config, event_store=event_store, steps=steps, init_id=init_id,
                tracer_provider=provider, labels=labels or {"node_id": self.node_id()}))
            nodes = {n.node_id: {"path": n.path, "files": sorted(n.files), "what": str(n.what),
                                 "ran_in": n.ran_in, "seconds": n.seconds}
                     for n in ctx.download_result.nodes}
        except Exception as exc:  # the test asserts on what the caller saw
            error, nodes = f"{type(exc).__name__}: {exc}", {}
        finally:
            event_store.close()
        spans = [{"name": s.name, "trace_id": s.context.trace_id, "span_id": s.context.span_id,
                  "parent": s.parent.span_id if s.parent else None,
                  "attributes": dict(s.attributes or {}), "status": s.status.status_code.name,
                  "start": s.start_time, "end": s.end_time}
                 for s in exporter.get_finished_spans()]
        return {"nodes": nodes, "spans": spans, "error": error,
                "seconds": time.perf_counter() - started}


def tree(path: str | None) -> list[str]:
    """The files under ``path`` (llm-init's own state directory left out)."""
    if not path:
        return []
    root = Path(path)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not str(p.relative_to(root)).startswith(".llm-init"))


def progress_of(store: str, init_id: str, node_id: str) -> list[dict[str, Any]]:
    """The download progress recorded so far for one node."""
    if not Path(store.removeprefix("sqlite:///")).exists():
        return []  # the replica has not opened it yet
    log = open_store(store, create=False)
    try:
        if init_id not in log.list_init_ids():
            return []
        return [e.details for e in read_events(log, init_id)
                if isinstance(e, StepProgressed) and e.details.get("node_id") == node_id]
    finally:
        log.close()


def deploy_app(args: dict[str, Any], http_port: int, name: str) -> float:
    """``serve.run`` of llm-init's OpenAI app with ``args`` as ``name``; its seconds."""
    from ray import serve
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    # One proxy, on the head: both nodes share this machine's ports.
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": http_port})
    app = call_user_app_builder_with_args_if_necessary(
        import_attr("llm_init.serve:build_openai_app"), args)
    started = time.perf_counter()
    serve.run(app, name=name, route_prefix="/")
    return time.perf_counter() - started
