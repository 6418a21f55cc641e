"""The engine step: starts vLLM's ``AsyncLLM`` and reports its start-up sub-phases.

The engine step: vLLM's ``AsyncLLM`` from the downloaded model, the merged engine arguments and
the placement group, with vLLM's start-up sub-phases reported as they happen.

The engine arguments are ``LLMConfig.engine_kwargs`` with ``ctx.extra_init_kwargs`` over them
(a callback's value wins); the merged result is reported as ``report(engine_kwargs=...)``. The
model is ``engine_model(ctx)``: under a streaming load format the bucket URI vLLM streams from,
else the download's local path (``model_path_from(ctx.download_result)``), else
``LLMConfig.source``. Construction blocks for seconds to minutes, so it runs in a thread: the
event loop, and with it progress and status, stays live. vLLM's start-up sub-phases are reported
as ``report(subphase=NAME, duration_s=SECONDS)`` (see ``llm_init.steps.vllm_startup``), and
each worker's weight transfer as a ``WeightsLoaded`` event (see ``llm_init.steps.weights``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from llm_init.events import ArtifactUseObserved
from llm_init.steps.base import ProgressReporter
from llm_init.steps.download.streaming import (
    load_format_of,
    require_streamer,
    streams_from_bucket,
)
from llm_init.steps.vllm_startup import ENGINE_CONFIG, ENGINE_CORE_START, EngineStartWatch
from llm_init.steps.weights import record_weight_loading
from llm_init.telemetry import names

if TYPE_CHECKING:
    from llm_init.context import NodeInitializationContext


def model_path_from(download_result: Any) -> str | None:
    """The local model directory in a download result: a path (``str``/``PathLike``), a mapping
    with ``"local_path"`` or ``"path"``, or an object with a ``local_path`` or ``path``
    attribute. ``None`` when there is no result (the download was skipped and nobody set one)
    or its ``path`` is ``None`` (no node fetched the model: a streaming load format)."""
    if download_result is None:
        return None
    if isinstance(download_result, str | os.PathLike):
        return os.fspath(download_result)
    if isinstance(download_result, Mapping):
        for key in ("local_path", "path"):
            value = download_result.get(key)
            if value is not None:
                return _path(value, f"download_result[{key!r}]")
        raise TypeError(f"ctx.download_result is a mapping without a 'local_path' or 'path' key "
                        f"(keys: {sorted(map(str, download_result))})")
    for attr in ("local_path", "path"):
        value = getattr(download_result, attr, None)
        if value is not None:
            return _path(value, f"download_result.{attr}")
    if hasattr(download_result, "path"):
        return None  # a result that holds no local model: every node NONE, or streamed
    kind = type(download_result)
    raise TypeError(f"ctx.download_result is a {kind.__module__}.{kind.__qualname__} with no "
                    "'local_path' or 'path'; set a path, a mapping or an object with one")


def streamed_source(ctx: NodeInitializationContext) -> str | None:
    """The bucket URI vLLM streams the weights from: the download's ``streamed_from``; with
    no download result, the config's source when its load format streams from a bucket (as
    Ray Serve LLM gives the engine when its node initialization is off). ``None``: the engine
    loads a local copy (``model_path_from``) or the source as it is."""
    result = ctx.download_result
    streamed = getattr(result, "streamed_from", None)
    if isinstance(streamed, str) and streamed:
        return streamed
    if result is None and streams_from_bucket(ctx.llm_config, merged_engine_kwargs(ctx)):
        return ctx.llm_config.source
    return None


def engine_model(ctx: NodeInitializationContext) -> str:
    """What vLLM is given as its model: the bucket URI it streams from, else the download's
    local directory, else ``LLMConfig.source``."""
    return (streamed_source(ctx) or model_path_from(ctx.download_result)
            or ctx.llm_config.source)


def _path(value: Any, where: str) -> str:
    if isinstance(value, str | os.PathLike):
        return os.fspath(value)
    kind = type(value)
    raise TypeError(f"ctx.{where} must be a path, got {kind.__module__}.{kind.__qualname__}")


async def overlapped_model(kwargs: dict[str, Any]) -> str | None:
    """The model directory to load from while an overlapped download still brings its weight
    files, with ``kwargs`` set for llm-init's loader (``llm_init.overlap``); ``None`` when no
    download is in flight (then the download's result says where the model is). A load
    format of another loader, which cannot wait for files, waits for the download instead."""
    from llm_init.overlap import (
        DEFAULT_WAIT_S,
        OVERLAP_LOAD_FORMAT,
        OVERLAPPABLE_LOAD_FORMATS,
        WAIT_KEY,
        current_overlap,
    )

    overlap = current_overlap()
    arriving = overlap.in_flight() if overlap is not None else None
    if overlap is None or arriving is None:
        return None
    load_format = kwargs.get("load_format")
    if load_format is not None and str(load_format) not in OVERLAPPABLE_LOAD_FORMATS:
        await overlap.download_done.wait()
        return None
    kwargs["load_format"] = OVERLAP_LOAD_FORMAT
    kwargs["model_loader_extra_config"] = {
        WAIT_KEY: DEFAULT_WAIT_S, **(kwargs.get("model_loader_extra_config") or {})}
    return arriving.model_dir


def merged_engine_kwargs(ctx: NodeInitializationContext) -> dict[str, Any]:
    """``LLMConfig.engine_kwargs`` with ``ctx.extra_init_kwargs`` over them: callbacks win."""
    return {**ctx.llm_config.engine_kwargs, **ctx.extra_init_kwargs}


@dataclass(frozen=True, slots=True, kw_only=True)
class VLLMEngineStep:
    """Starts vLLM's ``AsyncLLM`` and sets it as ``ctx.engine``; see the module docs.

    ``cpu_in_process_worker``: on the CPU with a single worker and no
    ``distributed_executor_backend`` given, run the worker inside vLLM's EngineCore process
    ("uni") rather than in one more process (vLLM's CPU default, which it prefers for OMP
    thread binding); saves a process start and a second import of vLLM.
    ``capture_child_logs``: read start-up timings and errors of the EngineCore process too.
    """

    cpu_in_process_worker: bool = True
    capture_child_logs: bool = True
    poll_s: float = 0.25

    async def run(self, ctx: NodeInitializationContext, report: ProgressReporter) -> None:
        kwargs = merged_engine_kwargs(ctx)
        model = engine_model(ctx)
        require_streamer(load_format_of(ctx.llm_config, kwargs), model)
        if streamed_source(ctx) is None:
            model = await overlapped_model(kwargs) or model
        config = ctx.llm_config
        kwargs.setdefault("tensor_parallel_size", config.tensor_parallel_size)
        kwargs.setdefault("pipeline_parallel_size", config.pipeline_parallel_size)
        world = int(kwargs["tensor_parallel_size"]) * int(kwargs["pipeline_parallel_size"])
        explicit_backend = "distributed_executor_backend" in kwargs
        if world > 1 and ctx.placement_group is not None and not explicit_backend:
            kwargs["distributed_executor_backend"] = "ray"  # workers go into the bundles
        report(engine_kwargs=kwargs, model=model)
        placement_group = ctx.placement_group
        async with EngineStartWatch(report, poll_s=self.poll_s) as watch:
            engine_args, vllm_config = await watch.call(lambda: _engine_config(model, kwargs),
                                                        subphase=ENGINE_CONFIG)
            if placement_group is not None:
                vllm_config.parallel_config.placement_group = placement_group
            if self.cpu_in_process_worker and world == 1 and not explicit_backend:
                use_in_process_worker_on_cpu(vllm_config)
            if self.capture_child_logs:
                watch.capture_child_logs(vllm_config)
            ctx.engine = await watch.call(lambda: _async_llm(engine_args, vllm_config),
                                          subphase=ENGINE_CORE_START)
        record_cache_use(ctx, report, watch)
        record_weight_loading(ctx, report, watch.weight_loads, vllm_config)


def record_cache_use(ctx: NodeInitializationContext, report: ProgressReporter,
                     watch: EngineStartWatch) -> None:
    """After a warm start's restore, record what vLLM did with its compile cache
    (``ArtifactUseObserved``, and attributes on the current span). Nothing is recorded when
    the records of the process that compiles could not be read: then nothing is known."""
    from llm_init.steps.download.fanout import this_node_id
    from llm_init.steps.warm_start import CONTEXT_KEY

    warm = ctx.custom_data.get(CONTEXT_KEY)
    if not isinstance(warm, Mapping) or not warm.get("artifact"):
        return
    if not watch.children_captured and not watch.cache_use_seen:
        return
    use = watch.cache_use
    span = trace.get_current_span()
    span.set_attribute(names.ATTR_ARTIFACT_USED, use.used)
    span.set_attribute(names.ATTR_ARTIFACT_AOT, use.aot)
    span.set_attribute(names.ATTR_ARTIFACT_GRAPHS_LOADED, use.graphs_loaded)
    span.set_attribute(names.ATTR_ARTIFACT_GRAPHS_COMPILED, use.graphs_compiled)
    fields = dict(key=str(warm["artifact"]), used=use.used, restored=warm.get("result") == "hit",
                  aot=use.aot, aot_reason=use.aot_reason, graphs_loaded=use.graphs_loaded,
                  graphs_compiled=use.graphs_compiled, compiled=use.compiled,
                  model_info_cached=use.model_info_cached,
                  cache_disabled=use.cache_disabled, node=this_node_id())
    record = getattr(report, "record", None)
    if record is not None:
        record(ArtifactUseObserved, **fields)
    else:  # a reporter without typed events: what vLLM did still reaches the log
        report(artifact_use=fields)


def use_in_process_worker_on_cpu(vllm_config: Any) -> bool:
    """On the CPU, run a single worker inside EngineCore ("uni"); ``True`` if it changed."""
    from vllm.platforms import current_platform

    parallel = vllm_config.parallel_config
    if not current_platform.is_cpu() or parallel.world_size != 1:
        return False
    parallel.distributed_executor_backend = "uni"
    return True


def _engine_config(model: str, kwargs: dict[str, Any]) -> tuple[Any, Any]:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.usage.usage_lib import UsageContext

    engine_args = AsyncEngineArgs(model=model, **kwargs)
    return engine_args, engine_args.create_engine_config(
        usage_context=UsageContext.OPENAI_API_SERVER)


def _async_llm(engine_args: Any, vllm_config: Any) -> Any:
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.executor.abstract import Executor

    return AsyncLLM(vllm_config=vllm_config, executor_class=Executor.get_class(vllm_config),
                    log_stats=not engine_args.disable_log_stats,
                    log_requests=engine_args.enable_log_requests)
