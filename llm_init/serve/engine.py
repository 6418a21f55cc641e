"""``LLMInitVLLMEngine``: Ray Serve LLM's vLLM engine, started through ``llm_init.initialize_node``.

``LLMServer`` runs it in place of Ray's ``VLLMEngine`` (``build_openai_app`` of this package sets
that up, or name it in ``RAYLLM_VLLM_ENGINE_CLS``). Its ``start()`` runs the five phases with
llm-init's hooks, events and spans: download (llm-init's step), placement group (the replica's
own) and an engine step that points Ray's engine config at the downloaded model (or, under a
streaming load format, the bucket URI vLLM streams from), applies the
merged engine arguments, builds vLLM's engine in a thread and then lets Ray's own
``VLLMEngine.start()`` set up everything it serves with. Ray's node initialization does not run
(``run_init_node`` is off) and a Ray callback's hooks are not called a second time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ray.llm._internal.serve.engines.vllm.vllm_engine import VLLMEngine

from llm_init.callbacks import EventObserver
from llm_init.context import NodeInitializationContext
from llm_init.errors import LLMInitError
from llm_init.launch import ReplicaLaunch, process_started_at
from llm_init.runtime import initialize_node
from llm_init.serve.configs import llm_init_config, replica_labels, settings_of
from llm_init.serve.ray_callbacks import hooks_already_ran, point_engine_at
from llm_init.serve.readiness import ReadinessMark
from llm_init.serve.settings import LLMInitSettings
from llm_init.serve.status import StatusServer
from llm_init.steps.base import DefaultSteps, ProgressReporter
from llm_init.steps.download.streaming import load_format_of, require_streamer
from llm_init.steps.engine import (
    merged_engine_kwargs,
    model_path_from,
    overlapped_model,
    record_cache_use,
    streamed_source,
    use_in_process_worker_on_cpu,
)
from llm_init.steps.placement import PlacementGroupStep
from llm_init.steps.vllm_startup import (
    ENGINE_CONFIG,
    ENGINE_CORE_START,
    SERVING_INIT,
    EngineStartWatch,
)
from llm_init.steps.weights import record_weight_loading
from llm_init.stores import open_store

_log = logging.getLogger(__name__)


class LLMInitVLLMEngine(VLLMEngine):
    """Ray Serve LLM's ``VLLMEngine`` whose ``start()`` runs llm-init; see the module docs."""

    def __init__(self, llm_config: Any) -> None:
        super().__init__(llm_config)
        self._prestarted: tuple[Any, Any] | None = None
        self.status_server: StatusServer | None = None
        self.init_context: NodeInitializationContext | None = None
        self.readiness: ReadinessMark | None = None

    async def start(self) -> None:
        if self._running:
            return
        settings = settings_of(self.llm_config)
        launch = ReplicaLaunch(settings.app_built_at, process_started_at())
        ray_callback = self.llm_config.get_or_create_callback()
        from ray.util.placement_group import get_current_placement_group

        config = llm_init_config(self.llm_config, settings, ray_callback,
                                 replica_placement_group=get_current_placement_group())
        observers: list[EventObserver] = []
        labels = {**replica_labels(), **settings.labels}
        if settings.status_port is not None:
            try:
                self.status_server = StatusServer(settings.status_host, settings.status_port)
            except OSError as exc:  # a second replica on the node, say: status is optional
                _log.warning("llm-init: no status endpoint on %s:%s: %s", settings.status_host,
                             settings.status_port, exc)
            else:
                observers.append(self.status_server)
                labels["status_url"] = self.status_server.url
                _log.info("llm-init: live status at %s", self.status_server.url)
        observers += _set_up_telemetry(settings)
        steps = DefaultSteps(download=settings.download(),
                             placement_group=PlacementGroupStep(),
                             engine=ServeEngineStep(self, ray_callback, settings))
        store = open_store(settings.event_store)
        try:
            self.init_context = await initialize_node(config, event_store=store, steps=steps,
                                                      observers=observers, labels=labels,
                                                      launch=launch,
                                                      heartbeat_interval_s=(
                                                          settings.heartbeat_interval_s))
        finally:
            store.close()
        self.readiness = ReadinessMark(settings.event_store, self.init_context.init_id,
                                       observers)
        if not self._running:
            raise LLMInitError(
                f"the engine of {config.model_id} did not start: its engine step was skipped "
                "(on_pre_engine_init returned False), but under Ray Serve the engine step is "
                "what starts the engine Serve answers with")

    async def check_health(self) -> None:
        await super().check_health()
        mark, self.readiness = self.readiness, None  # only the first passed check counts
        if mark is not None:
            await asyncio.to_thread(mark.record)
            if self.init_context is not None and self.init_context.llm_config.artifact_store:
                from llm_init.artifacts.publishing import start_publish

                # Off the critical path: the replica serves while its cache is uploaded.
                start_publish(self.init_context, event_store_location=mark.store_location,
                              observers=mark.observers)

    async def shutdown(self) -> None:
        if self.status_server is not None:
            self.status_server.close()
            self.status_server = None
        await super().shutdown()

    async def _start_ray_engine(self) -> None:
        """Ray's own ``VLLMEngine.start()``, which finds the engine already built."""
        await super().start()

    def _prepare_engine_config(self, callback_ctx: Any) -> Any:
        if self._prestarted is not None:
            return self._prestarted[0]
        return super()._prepare_engine_config(callback_ctx)

    def _start_async_llm_engine(self, engine_args: Any, vllm_config: Any,
                                placement_group: Any) -> Any:
        if self._prestarted is not None:
            client, self._prestarted = self._prestarted[1], None
            return client
        return super()._start_async_llm_engine(engine_args, vllm_config, placement_group)


class ServeEngineStep:
    """The engine step inside a Serve replica: vLLM's engine built in a thread, then Ray's
    ``start()`` for the serving state, with start-up sub-phases reported."""

    def __init__(self, engine: LLMInitVLLMEngine, ray_callback: Any,
                 settings: LLMInitSettings) -> None:
        self.engine = engine
        self.ray_callback = ray_callback
        self.settings = settings

    async def run(self, ctx: NodeInitializationContext, report: ProgressReporter) -> None:
        engine, ray_ctx = self.engine, self.ray_callback.ctx
        kwargs = merged_engine_kwargs(ctx)
        streamed = streamed_source(ctx)
        require_streamer(load_format_of(ctx.llm_config, kwargs),
                         streamed or ctx.llm_config.source)
        model_dir = streamed or (await overlapped_model(kwargs)
                                 or model_path_from(ctx.download_result))
        point_engine_at(engine.llm_config, model_dir)
        engine_config: Any = engine.llm_config.get_engine_config()
        _apply_engine_kwargs(engine_config, kwargs)
        report(engine_kwargs=kwargs, model=engine_config.actual_hf_model_id)
        ray_ctx.run_init_node = False  # llm-init did the node's work
        ray_ctx.placement_group = ctx.placement_group
        if ctx.runtime_env is not None:
            ray_ctx.runtime_env = ctx.runtime_env
        async with EngineStartWatch(report) as watch:
            prepared = await watch.call(lambda: engine._prepare_engine_config(ray_ctx),
                                        subphase=ENGINE_CONFIG)
            engine_args, _, vllm_config = prepared
            if self.settings.cpu_in_process_worker:
                use_in_process_worker_on_cpu(vllm_config)
            watch.capture_child_logs(vllm_config)
            client = await watch.call(
                lambda: engine._start_async_llm_engine(engine_args, vllm_config,
                                                       ctx.placement_group),
                subphase=ENGINE_CORE_START)
            engine._prestarted = (prepared, client)
            started = time.perf_counter()
            try:
                with hooks_already_ran(engine.llm_config, self.ray_callback):
                    await engine._start_ray_engine()
            finally:
                engine._prestarted = None
            watch.measured(SERVING_INIT, time.perf_counter() - started)
        record_cache_use(ctx, report, watch)
        record_weight_loading(ctx, report, watch.weight_loads, vllm_config)
        ctx.engine = engine


def _apply_engine_kwargs(engine_config: Any, kwargs: dict[str, Any]) -> None:
    """Put the merged engine arguments where Ray's engine config keeps them: vLLM's frontend
    arguments apart from its engine arguments, as Ray's ``LLMConfig`` splits them."""
    import dataclasses

    from vllm.entrypoints.launchers.cli_args import FrontendArgs

    frontend_names = {f.name for f in dataclasses.fields(FrontendArgs)}
    engine_config.frontend_kwargs = {
        **engine_config.frontend_kwargs, **{k: v for k, v in kwargs.items() if k in frontend_names}}
    engine_config.engine_kwargs = {k: v for k, v in kwargs.items() if k not in frontend_names}


def _set_up_telemetry(settings: LLMInitSettings) -> list[EventObserver]:
    """The tracing SDK from the replica's ``OTEL_*`` variables, and llm-init's metrics callback
    as an observer (``llm_init.telemetry``), as the settings ask."""
    observers: list[EventObserver] = []
    if settings.tracing:
        from llm_init.telemetry.tracing import configure_tracing

        configure_tracing()
    if settings.metrics:
        from llm_init.telemetry.metrics import MetricsCallback

        observers.append(MetricsCallback())
    return observers
