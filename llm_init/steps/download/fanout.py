"""One download per node: the local node in this process, every other in a pinned Ray task.

One download per node: the local node in this process, every other node in a Ray task
pinned to it (hard node affinity, ``num_cpus=0``, the context's ``runtime_env``), each inside
the initialization's trace.

The trace crosses into Ray tasks as a W3C ``traceparent`` through the OpenTelemetry API's
``propagate.inject``/``extract`` (kept here until ``llm_init.telemetry`` has a shared helper).

Every node's ``llm_init.download.node`` span is made by the initializing process, with the
tracer of the initialization (the ``tracer_provider`` given to ``initialize_node``, else the
global one): a Ray task on another node has no way to reach that provider, so it returns when
its download began and the caller records the span with that start and its duration.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.context import Context

from llm_init.steps.download.errors import DownloadError
from llm_init.steps.download.node import NodePlan, download_on_node
from llm_init.steps.download.progress import NodeProgress, ProgressSnapshot
from llm_init.steps.download.result import NodeDownloadResult
from llm_init.telemetry import names, spans

# Span of one node's download, a child of the download step's span (in-process or in a task).
SPAN_DOWNLOAD_NODE = "llm_init.download.node"
ATTR_RAN_IN = "llm_init.download.ran_in"
ATTR_BYTES_FETCHED = "llm_init.download.bytes_fetched"

NodeSelection = Sequence[str] | Literal["all"] | None


def trace_carrier() -> dict[str, str]:
    """The current trace context as W3C headers (``traceparent``, ``tracestate``)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


@contextmanager
def continued_trace(carrier: Mapping[str, str]) -> Iterator[None]:
    """Make the trace context in ``carrier`` current for the block."""
    token = otel_context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)


def current_trace_id() -> str | None:
    span_context = trace.get_current_span().get_span_context()
    return format(span_context.trace_id, "032x") if span_context.is_valid else None


def download_here(plan: NodePlan, *, node_id: str, progress: NodeProgress,
                  stop: threading.Event, ran_in: str = "process") -> NodeDownloadResult:
    """This node's download inside a ``llm_init.download.node`` span of the current
    initialization's tracer."""
    attributes = {names.ATTR_NODE_ID: node_id, ATTR_RAN_IN: ran_in,
                  names.ATTR_STEP: "download"}
    with spans.current_tracer().start_as_current_span(SPAN_DOWNLOAD_NODE,
                                                      attributes=attributes) as span:
        result = download_on_node(plan, node_id=node_id, progress=progress, stop=stop,
                                  ran_in=ran_in, trace_id=current_trace_id())
        span.set_attribute(ATTR_BYTES_FETCHED, result.bytes_fetched)
        return result


def download_task(plan: NodePlan, carrier: Mapping[str, str],
                  interval_s: float = 0.25) -> Iterator[ProgressSnapshot | NodeDownloadResult]:
    """The body of the Ray task on one node (a streaming generator): download in the caller's
    trace context (its id is in the result), yielding a progress snapshot every ``interval_s``
    while something changed, then the result. The caller records the node's span
    (``record_node_span``); closing the generator (the task cancelled) stops the download."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    progress, stop = NodeProgress(), threading.Event()
    outcome: list[NodeDownloadResult | BaseException] = []

    def work() -> None:
        with continued_trace(carrier):
            try:
                outcome.append(download_on_node(plan, node_id=node_id, progress=progress,
                                                stop=stop, ran_in="ray_task",
                                                trace_id=current_trace_id()))
            except BaseException as exc:  # raised again in the task, where Ray reports it
                outcome.append(exc)

    thread = threading.Thread(target=work, name="llm-init-download-node", daemon=True)
    thread.start()
    last: ProgressSnapshot | None = None
    try:
        while thread.is_alive():
            thread.join(interval_s)
            snapshot = progress.snapshot()
            if thread.is_alive() and snapshot != last:
                last = snapshot
                yield snapshot
    finally:
        stop.set()  # a no-op once the download is over; else the task was cancelled
    thread.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    yield outcome[0]


async def follow_download(stream: Any,
                          on_progress: Callable[[ProgressSnapshot], None]) -> NodeDownloadResult:
    """Read a ``download_task`` stream (its ``ObjectRefGenerator``): hand every snapshot to
    ``on_progress``; return the result."""
    async for ref in stream:
        item = await ref
        if isinstance(item, NodeDownloadResult):
            return item
        on_progress(item)
    raise DownloadError("the download task ended without a result")


def record_node_span(parent: Context, node_id: str, *, started_at: float,
                     result: NodeDownloadResult | None = None,
                     error: BaseException | None = None) -> None:
    """Record the ``llm_init.download.node`` span of a node that downloaded in a Ray task, as
    a child of ``parent``: from the task's start (``result.started_at``, else ``started_at``,
    when the task was submitted) for the task's ``seconds`` (else until now), with the error if
    it failed."""
    begin = result.started_at if result is not None and result.started_at else started_at
    end = begin + result.seconds if result is not None else time.time()
    span = spans.current_tracer().start_span(
        SPAN_DOWNLOAD_NODE, context=parent, start_time=int(begin * 1e9),
        attributes={names.ATTR_NODE_ID: node_id, ATTR_RAN_IN: "ray_task",
                    names.ATTR_STEP: "download"})
    if result is not None:
        span.set_attribute(ATTR_BYTES_FETCHED, result.bytes_fetched)
    if error is not None:
        spans.record_error(span, error)
    span.end(end_time=int(max(end, begin) * 1e9))


def ray_initialized() -> bool:
    """Whether Ray is initialized here (if ``ray`` was never imported, it cannot be)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def this_node_id() -> str:
    """Ray's id of this node, or the host name when Ray is not initialized."""
    if ray_initialized():
        import ray

        return str(ray.get_runtime_context().get_node_id())
    return socket.gethostname()


def is_placement_group(value: Any) -> bool:
    if "ray" not in sys.modules:
        return False
    from ray.util.placement_group import PlacementGroup

    return isinstance(value, PlacementGroup)


async def nodes_to_download(placement_group: Any, nodes: NodeSelection,
                            timeout_s: float) -> tuple[str, tuple[str, ...]]:
    """This node, and the other nodes to download on: those of the placement group, else those
    named in ``nodes`` (``"all"``: every alive node), else none."""
    local = this_node_id()
    if not ray_initialized():
        return local, ()
    import ray

    found: list[str] = []
    if is_placement_group(placement_group):
        try:
            await asyncio.wait_for(asyncio.wrap_future(placement_group.ready().future()),
                                   timeout_s)
        except TimeoutError as exc:
            raise DownloadError(
                f"placement group {placement_group.id.hex()} was not ready within {timeout_s} s"
            ) from exc
        table = ray.util.placement_group_table(placement_group)
        found = list(table["bundles_to_node_id"].values())
    elif nodes == "all":
        alive = ray.nodes()  # type: ignore[no-untyped-call]  # ray.nodes is not annotated
        found = [n["NodeID"] for n in alive if n["Alive"]]
    elif nodes:
        found = list(nodes)
    others = tuple(dict.fromkeys(n for n in found if n != local))
    return local, others


def submit_download(plan: NodePlan, node_id: str, carrier: Mapping[str, str],
                    runtime_env: dict[str, Any] | None, interval_s: float = 0.25) -> Any:
    """Start ``download_task`` on ``node_id``, pinned there; return its ``ObjectRefGenerator``
    (read it with ``follow_download``)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    options: dict[str, Any] = {
        "num_cpus": 0,
        "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
        "name": "llm_init.download",
        # Pinned to one node: when that node is lost a retry can only be unschedulable, and
        # its error would hide the loss. The next initialization resumes the download.
        "max_retries": 0,
    }
    if runtime_env:
        options["runtime_env"] = runtime_env
    return _remote_task().options(**options).remote(plan, dict(carrier), interval_s)


@functools.cache
def _remote_task() -> Any:
    """``download_task`` as a Ray remote function, made once per process."""
    import ray

    return ray.remote(num_returns="streaming")(download_task)
