"""``DownloadStep``: the download phase's default step, with live progress events."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context

from llm_init.config import NodeModelDownloadable
from llm_init.events import WeightsRouteChosen
from llm_init.overlap import (
    OVERLAPPABLE_LOAD_FORMATS,
    PLUGIN,
    WeightsArriving,
    current_overlap,
)
from llm_init.steps.base import ProgressReporter
from llm_init.steps.download.checksums import MIB
from llm_init.steps.download.errors import DownloadError
from llm_init.steps.download.fanout import (
    NodeSelection,
    download_here,
    follow_download,
    nodes_to_download,
    record_node_span,
    submit_download,
    trace_carrier,
)
from llm_init.steps.download.fetch import FetchOptions
from llm_init.steps.download.node import NodePlan
from llm_init.steps.download.progress import NodeProgress, ProgressSnapshot
from llm_init.steps.download.result import DownloadResult, NodeDownloadResult
from llm_init.steps.download.sources import (
    LOCAL_VERIFY_MODES,
    LocalVerify,
    SourceSpec,
    parse_source,
)
from llm_init.steps.download.streaming import (
    ROUTE_DOWNLOADED,
    ROUTE_STREAMED,
    STREAMING_LOAD_FORMATS,
    downloaded_reason,
    is_bucket_uri,
    load_format_of,
    require_streamer,
    streaming_reason,
)

if TYPE_CHECKING:
    from llm_init.context import NodeInitializationContext


@dataclass(frozen=True, slots=True, kw_only=True)
class DownloadStep:
    """Downloads the model on every node of the initialization into a per-node cache; a local
    directory source is used in place, as Ray Serve LLM does, unless ``copy_local_source``.

    ``source`` overrides ``llm_config.source``; ``revision`` (Hub only) defaults to
    ``engine_kwargs["revision"]``, else ``main``. See docs/download.md for every option.
    """

    source: str | None = None
    revision: str | None = None
    endpoint_url: str | None = None  # S3 or Hub endpoint override
    cache_dir: str | os.PathLike[str] | None = None
    nodes: NodeSelection = None  # Ray node ids (or "all") when there is no placement group
    max_workers: int = 8
    chunk_size: int = 1 * MIB
    retries: int = 3
    max_bandwidth: float | None = None  # bytes per second per node
    fsync: bool = True
    checksums: bool = True  # False: verify sizes only
    prefer_safetensors: bool = True
    allow_patterns: Sequence[str] | None = None
    ignore_patterns: Sequence[str] = ()
    copy_local_source: bool = False  # as Ray Serve LLM: a local directory is used in place
    local_in_process: bool = True  # False: the local node downloads in a Ray task too
    lock_timeout_s: float | None = None
    placement_group_timeout_s: float = 300.0
    progress_interval_s: float = 0.25
    verify: LocalVerify = "header"  # local directories: "sha256" also hashes every file

    def __post_init__(self) -> None:
        if self.verify not in LOCAL_VERIFY_MODES:
            raise ValueError(f"DownloadStep.verify={self.verify!r} is not one of "
                             f"{', '.join(LOCAL_VERIFY_MODES)}")
        for name in ("max_workers", "chunk_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"DownloadStep.{name} must be >= 1")
        if self.progress_interval_s <= 0:
            raise ValueError("DownloadStep.progress_interval_s must be positive")

    def source_spec(self, ctx: NodeInitializationContext) -> SourceSpec:
        """Where the model comes from, for this initialization."""
        config = ctx.llm_config
        revision = self.revision or config.engine_kwargs.get("revision")
        return parse_source(self.source or config.source, revision=revision,
                            endpoint_url=self.endpoint_url)

    def plan(self, spec: SourceSpec, what: NodeModelDownloadable, *,
             weights_last: bool = False) -> NodePlan:
        """The plan one node downloads by (``weights_last``: for an overlapped start)."""
        return NodePlan(
            source=spec, what=what,
            cache_dir=os.fspath(self.cache_dir) if self.cache_dir is not None else None,
            fetch=FetchOptions(max_workers=self.max_workers, chunk_size=self.chunk_size,
                               retries=self.retries, max_bandwidth=self.max_bandwidth,
                               fsync=self.fsync, checksums=self.checksums,
                               weights_last=weights_last),
            prefer_safetensors=self.prefer_safetensors,
            allow_patterns=tuple(self.allow_patterns) if self.allow_patterns is not None
            else None,
            ignore_patterns=tuple(self.ignore_patterns), copy_local_source=self.copy_local_source,
            lock_timeout_s=self.lock_timeout_s, verify=self.verify,
        )

    async def run(self, ctx: NodeInitializationContext, report: ProgressReporter) -> None:
        started = time.perf_counter()
        spec = self.source_spec(ctx)
        load_format = load_format_of(ctx.llm_config, {**ctx.llm_config.engine_kwargs,
                                                      **ctx.extra_init_kwargs})
        require_streamer(load_format, spec.uri)  # before any node works, not in the engine
        local, others = await nodes_to_download(ctx.placement_group, self.nodes,
                                                self.placement_group_timeout_s)
        streamed_from = self._weights_route(ctx, report, spec, load_format, local, others)
        overlap = current_overlap()
        if overlap is not None and (reason := overlap_refused(ctx)) is not None:
            report(overlap=f"sequential: {reason}")
            overlap = None
        local_plan = self.plan(spec, ctx.local_node_download_model,
                               weights_last=overlap is not None)
        worker_plan = self.plan(spec, ctx.worker_node_download_model,
                                weights_last=overlap is not None)
        carrier = trace_carrier()
        parent = otel_context.get_current()  # the step's span: where each node's span hangs
        progress, stop = NodeProgress(), threading.Event()
        pending: dict[asyncio.Future[NodeDownloadResult], str] = {}
        refs: list[Any] = []  # Ray tasks' streams: their errors are wrapped
        submitted: dict[str, float] = {}  # nodes downloading in a Ray task, and since when
        reports = _ProgressReports(report)
        in_process: asyncio.Future[NodeDownloadResult] | None = None

        def in_task(plan: NodePlan, node_id: str) -> None:
            submitted[node_id] = time.time()
            refs.append(submit_download(plan, node_id, carrier, ctx.runtime_env,
                                        self.progress_interval_s))
            pending[asyncio.ensure_future(follow_download(
                refs[-1], functools.partial(reports.snapshot, node_id)))] = node_id

        if self.local_in_process:
            in_process = asyncio.ensure_future(asyncio.to_thread(
                download_here, local_plan, node_id=local, progress=progress, stop=stop))
            pending[in_process] = local
        else:
            in_task(local_plan, local)
        for node_id in others:
            in_task(worker_plan, node_id)
        results: dict[str, NodeDownloadResult] = {}
        try:
            while pending:
                done, _ = await asyncio.wait(pending, timeout=self.progress_interval_s,
                                             return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    node_id = pending.pop(future)
                    results[node_id] = _node_result(future, node_id, future is in_process)
                    if node_id in submitted:
                        record_node_span(parent, node_id, started_at=submitted.pop(node_id),
                                         result=results[node_id])
                    reports.completed(results[node_id])
                if in_process is not None and local not in results:
                    reports.live(local, progress)
                    if overlap is not None and progress.arriving_in is not None:
                        overlap.announce(WeightsArriving(progress.arriving_in))
        except BaseException as exc:
            stop.set()
            _cancel(refs)
            for future in pending:
                if future is not in_process:
                    future.cancel()
            for node_id, since in submitted.items():  # unfinished, or the one that failed
                record_node_span(parent, node_id, started_at=since, error=exc)
            raise
        ordered = tuple(results[n] for n in (local, *others))
        seconds = time.perf_counter() - started
        fetched = sum(n.bytes_fetched for n in ordered)
        ctx.download_result = DownloadResult(
            source=spec.uri, source_kind=spec.kind,
            revision=next((n.revision for n in ordered if n.revision), spec.revision),
            path=results[local].path, nodes=ordered,
            bytes_total=sum(n.bytes_total for n in ordered), bytes_fetched=fetched,
            files_total=sum(len(n.files) for n in ordered),
            files_fetched=sum(n.files_fetched for n in ordered),
            seconds=seconds, throughput_bytes_per_s=fetched / seconds if seconds else 0.0,
            streamed_from=streamed_from,
        )

    @staticmethod
    def _weights_route(ctx: NodeInitializationContext, report: ProgressReporter,
                       spec: SourceSpec, load_format: str | None, local: str,
                       others: Sequence[str]) -> str | None:
        """Under a streaming load format with a bucket source, record how the weights reach
        the engine, and why; the bucket URI when vLLM streams them (no node fetches them)."""
        if load_format not in STREAMING_LOAD_FORMATS or not is_bucket_uri(spec.uri):
            return None
        modes = {local: ctx.local_node_download_model.value,
                 **{n: ctx.worker_node_download_model.value for n in others}}
        weights = NodeModelDownloadable.MODEL_AND_TOKENIZER.value
        streamed = weights not in modes.values()
        fields: dict[str, Any] = dict(
            route=ROUTE_STREAMED if streamed else ROUTE_DOWNLOADED,
            reason=streaming_reason(load_format) if streamed
            else downloaded_reason(load_format, modes),
            load_format=load_format, source=spec.uri, modes=modes)
        record = getattr(report, "record", None)
        if record is not None:
            record(WeightsRouteChosen, **fields)
        else:  # a reporter without typed events: the route still reaches the log
            report(weights_route=fields["route"], reason=fields["reason"], modes=modes)
        return spec.uri if streamed else None


def download_step(**options: Any) -> DownloadStep:
    """A ``DownloadStep`` for ``DefaultSteps(download=...)``; options as ``DownloadStep``'s."""
    return DownloadStep(**options)


def overlap_refused(ctx: NodeInitializationContext) -> str | None:
    """Why this download cannot let the engine start before its weights are in place, or
    ``None`` when it can: the local node fetches the model, vLLM loads it with the default
    loader's format, and llm-init's vLLM plugin is installed and allowed."""
    if ctx.local_node_download_model != NodeModelDownloadable.MODEL_AND_TOKENIZER:
        return f"the local node downloads {ctx.local_node_download_model.value}"
    if ctx.llm_config.artifact_store is not None:
        return ("warm starts (artifact_store) restore the compile cache by a key of the "
                "downloaded weights, before the engine starts")
    load_format = {**ctx.llm_config.engine_kwargs, **ctx.extra_init_kwargs}.get("load_format")
    if load_format is not None and str(load_format) not in OVERLAPPABLE_LOAD_FORMATS:
        return f"load_format={load_format} cannot wait for files"
    return plugin_missing()


def plugin_missing() -> str | None:
    """Why vLLM would not find llm-init's overlap loader, or ``None``."""
    from importlib.metadata import entry_points

    names = {p.name for p in entry_points(group="vllm.general_plugins")}
    if PLUGIN not in names:
        return (f"llm-init's vLLM plugin {PLUGIN!r} is not installed (reinstall llm-init "
                "so that its entry points are registered)")
    allowed = os.environ.get("VLLM_PLUGINS")
    if allowed is not None and PLUGIN not in allowed.split(","):
        return f"VLLM_PLUGINS={allowed!r} leaves out llm-init's vLLM plugin {PLUGIN!r}"
    return None


def _node_result(future: asyncio.Future[NodeDownloadResult], node_id: str,
                 in_process: bool) -> NodeDownloadResult:
    if in_process:
        return future.result()  # its errors name the file; this node is the caller's
    try:
        return future.result()
    except Exception as exc:
        # A Ray task's error arrives wrapped; say which node failed, keep the cause chained.
        cause = getattr(exc, "cause", None) or exc
        raise DownloadError(f"the download on node {node_id} failed: "
                            f"{type(cause).__name__}: {cause}") from exc


def _cancel(refs: Sequence[Any]) -> None:
    if not refs:
        return
    import ray

    for ref in refs:
        with contextlib.suppress(Exception):  # best effort: it may have finished already
            ray.cancel(ref)


class _ProgressReports:
    """Turns node progress into ``report(...)`` calls. ``bytes_delta`` sums, over all events,
    to the bytes fetched from the source, so a metric can count it."""

    def __init__(self, report: ProgressReporter) -> None:
        self.report = report
        self.started = time.perf_counter()
        self.reported: dict[str, int] = {}  # bytes fetched already reported, per node
        self.last: dict[str, tuple[Any, ...]] = {}

    def live(self, node_id: str, progress: NodeProgress) -> None:
        self.snapshot(node_id, progress.snapshot())

    def snapshot(self, node_id: str, snap: ProgressSnapshot) -> None:
        state = (snap.stage, snap.bytes_done, snap.files_done, snap.bytes_total)
        if self.last.get(node_id) == state:
            return
        self.last[node_id] = state
        delta = snap.bytes_fetched - self.reported.get(node_id, 0)
        self.reported[node_id] = snap.bytes_fetched
        elapsed = time.perf_counter() - self.started
        self.report(node_id=node_id, stage=snap.stage, bytes_delta=delta,
                    bytes_done=snap.bytes_done, bytes_total=snap.bytes_total,
                    files_done=snap.files_done, files_total=snap.files_total,
                    throughput_bytes_per_s=round(snap.bytes_fetched / elapsed, 1))

    def completed(self, result: NodeDownloadResult) -> None:
        delta = result.bytes_fetched - self.reported.get(result.node_id, 0)
        self.reported[result.node_id] = result.bytes_fetched
        self.report(node_id=result.node_id, stage="node_completed", bytes_delta=delta,
                    bytes_done=result.bytes_total, bytes_total=result.bytes_total,
                    files_done=len(result.files), files_total=len(result.files),
                    throughput_bytes_per_s=round(result.throughput_bytes_per_s, 1),
                    seconds=round(result.seconds, 3), ran_in=result.ran_in)
