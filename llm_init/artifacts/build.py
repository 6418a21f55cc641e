"""Builds a warm-start artifact before a rollout: one engine start, then a publish.

Build a warm-start artifact before a rollout: one engine start, then a publish, so that the
first replica of a new model or version restores instead of compiling.

``build`` runs a whole initialization (recorded like any other, labelled ``purpose:
warm-build``) with the same download, warm-start restore and engine arguments a Serve replica
uses, so it computes the same key and the engine sees the model at the same linked path; once
the engine has started (vLLM compiles while it starts) it publishes the cache synchronously.
With ``on_ray=True`` all of that runs as a Ray task, placed by ``num_cpus``/``num_gpus``/
``resources``/``accelerator_type`` on a node with the target accelerator, because the key
includes the device.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llm_init.artifacts.settings import ArtifactSettings, artifact_settings
from llm_init.artifacts.transfer import EXISTS, PUBLISHED
from llm_init.environ import environment
from llm_init.errors import ArtifactError, LLMInitError
from llm_init.telemetry.redaction import exception_message, redact_text

if TYPE_CHECKING:
    from llm_init.config import LLMConfig
    from llm_init.steps.base import DefaultStep

PURPOSE_LABEL = "purpose"
PURPOSE = "warm-build"

_log = logging.getLogger(__name__)


class BuildError(ArtifactError):
    """A warm-start build could not run: no artifact store, or the engine did not start."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BuildOutcome:
    """What a build did: ``published`` (bytes uploaded) or ``skipped`` with the publish's
    reason (``exists``: the store already had it, which is a success too)."""

    result: str
    key: str
    model_id: str
    store: str  # the store's URL, credentials masked
    init_id: str
    reason: str | None = None
    message: str | None = None
    bytes: int = 0
    files: int = 0
    seconds: float = 0.0  # the whole build
    engine_s: float = 0.0  # the initialization, engine start included
    publish_s: float = 0.0
    parts: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the store now holds the artifact (published now, or already there)."""
        return self.result == PUBLISHED or self.reason == EXISTS

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)} | {
            "parts": dict(self.parts), "ok": self.ok}


def build(llm_config: LLMConfig, *, on_ray: bool = False, num_cpus: float | None = None,
          num_gpus: float | None = None, resources: Mapping[str, float] | None = None,
          accelerator_type: str | None = None, download: DefaultStep | None = None,
          event_store: str | None = None) -> BuildOutcome:
    """Start ``llm_config``'s engine once, here or (``on_ray``) in a Ray task placed by the
    other arguments, and publish its cache to ``llm_config.artifact_store``; see the module
    docs. ``download``: the download step (default llm-init's, as Serve's); ``event_store``:
    where the build's initialization is recorded (default ``LLM_INIT_EVENT_STORE``, else
    ``.llm-init/events.sqlite``). Raises ``BuildError`` when there is nothing to build with."""
    settings = _settings_of(llm_config)
    if not on_ray:
        return build_here(llm_config, download=download, event_store=event_store)
    import ray

    if not ray.is_initialized():
        ray.init()
    options: dict[str, Any] = {"name": "llm_init.warm_build", "max_retries": 0,
                               "num_cpus": 1 if num_cpus is None else num_cpus}
    if num_gpus is not None:
        options["num_gpus"] = num_gpus
    if resources:
        options["resources"] = dict(resources)
    if accelerator_type is not None:
        options["accelerator_type"] = accelerator_type
    if llm_config.runtime_env:
        options["runtime_env"] = llm_config.runtime_env
    task = ray.remote(_build_task).options(**options)
    try:
        outcome: BuildOutcome = ray.get(task.remote(llm_config, download, event_store))
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause if isinstance(exc.cause, LLMInitError) else None
        if cause is not None:
            raise cause from exc
        raise BuildError(f"the warm-start build of {redact_text(llm_config.model_id)} failed "
                         f"in its Ray task: {exception_message(exc)}") from exc
    _log.info("llm-init: warm build of %s into %s: %s", llm_config.model_id, settings.location,
              outcome.result)
    return outcome


def _build_task(llm_config: LLMConfig, download: DefaultStep | None,
                event_store: str | None) -> BuildOutcome:
    return build_here(llm_config, download=download, event_store=event_store)


def build_here(llm_config: LLMConfig, *, download: DefaultStep | None = None,
               event_store: str | None = None) -> BuildOutcome:
    """``build`` in this process (the Ray task's body)."""
    from llm_init.artifacts.publishing import publish_plan
    from llm_init.runtime import initialize_node_sync
    from llm_init.steps.base import DefaultSteps
    from llm_init.steps.engine import VLLMEngineStep
    from llm_init.steps.ray_vllm import DefaultDownload
    from llm_init.steps.warm_start import PUBLISH_KEY, capture_plan
    from llm_init.stores import open_store

    settings = _settings_of(llm_config)
    model = redact_text(llm_config.model_id)
    started = time.perf_counter()
    env = dict((llm_config.runtime_env or {}).get("env_vars") or {})
    steps = DefaultSteps(download=download or DefaultDownload(),
                         placement_group=_placement_step(llm_config),
                         engine=_EngineUnlessRestored(VLLMEngineStep()))
    store = open_store(event_store)
    try:
        with _environment(env):
            try:
                ctx = initialize_node_sync(llm_config, event_store=store, steps=steps,
                                           labels={PURPOSE_LABEL: PURPOSE})
            except LLMInitError as exc:
                raise BuildError(f"the engine of {model} did not start for the warm-start "
                                 f"build: {exception_message(exc)}") from exc
            try:
                engine_s = time.perf_counter() - started
                plan = capture_plan(ctx)
                if plan is None:
                    raise BuildError(
                        f"no warm-start artifact for {model}: the download phase left no model "
                        "directory (or a pre-download hook skipped it), so there is no key")
                # Unlike ``start_publish``, ``publish_plan`` ignores ``publish: false``: the
                # build exists to publish (a callback's veto or redirect still applies).
                published = publish_plan(ctx.init_id, plan, ctx.custom_data.get(PUBLISH_KEY),
                                         event_store=store)
            finally:
                _shut_down(ctx.engine)
    finally:
        store.close()
    return BuildOutcome(result=published.result, key=published.key, model_id=model,
                        store=settings.location, init_id=ctx.init_id, reason=published.reason,
                        message=redact_text(published.message or "") or None,
                        bytes=published.bytes, files=published.files,
                        seconds=time.perf_counter() - started, engine_s=engine_s,
                        publish_s=published.seconds, parts=dict(plan.key.parts))


@dataclass(frozen=True, slots=True)
class BuildTarget:
    """One model of a Serve config, as its replicas would initialize it."""

    llm_config: LLMConfig
    download: DefaultStep
    event_store: str | None


def serve_targets(serve_config: Mapping[str, Any]) -> list[BuildTarget]:
    """Every model of a Serve config (a ``serve deploy`` file's ``applications``, or one
    application's ``args`` with ``llm_configs``), with llm-init's settings layered as
    ``llm_init.serve.build_openai_app`` layers them."""
    from llm_init.serve.builder import with_llm_init
    from llm_init.serve.configs import llm_init_config, settings_of
    from llm_init.serve.settings import SETTINGS_KEY, ServeConfigError

    if not isinstance(serve_config, Mapping):
        raise ServeConfigError("a Serve config must be a mapping")
    if "applications" in serve_config:
        apps = serve_config["applications"]
        args_list = [dict(app.get("args") or {}) for app in apps if isinstance(app, Mapping)]
    else:
        args_list = [dict(serve_config.get("args") or serve_config)]
    targets = []
    for args in args_list:
        for entry in args.get("llm_configs") or ():
            ray_config = with_llm_init(entry, args.get(SETTINGS_KEY))
            settings = settings_of(ray_config)
            targets.append(BuildTarget(llm_init_config(ray_config, settings),
                                       settings.download(), settings.event_store))
    if not targets:
        raise ServeConfigError("the Serve config has no llm_configs")
    return targets


def _settings_of(llm_config: LLMConfig) -> ArtifactSettings:
    settings = artifact_settings(llm_config.artifact_store)
    if settings is None:
        raise BuildError(f"{redact_text(llm_config.model_id)} has no artifact_store: a "
                         "warm-start build needs one to publish to")
    return settings


def _placement_step(llm_config: LLMConfig) -> DefaultStep:
    """Ray's placement group where the engine spans several workers; none for one worker,
    which runs in this process as in a single-worker replica."""
    if llm_config.tensor_parallel_size * llm_config.pipeline_parallel_size > 1:
        from llm_init.steps.placement import PlacementGroupStep

        return PlacementGroupStep()
    return _NoPlacementGroup()


@dataclass(frozen=True, slots=True)
class _EngineUnlessRestored:
    """The engine step, unless the warm start just restored the very artifact the build would
    publish: then the store has it, and starting the engine would only spend the accelerator."""

    engine: DefaultStep

    async def run(self, ctx: Any, report: Any) -> None:
        from llm_init.artifacts.transfer import HIT
        from llm_init.steps.warm_start import CONTEXT_KEY

        warm = ctx.custom_data.get(CONTEXT_KEY) or {}
        if warm.get("result") == HIT:
            report(engine="not started: the store already has artifact "
                   f"{warm.get('artifact')}")
            return
        await self.engine.run(ctx, report)


class _NoPlacementGroup:
    """The placement phase of a single-worker build: nothing to reserve."""

    async def run(self, ctx: Any, report: Any) -> None:
        report(placement_group="none: a single worker runs in this process")


def _environment(env: Mapping[str, str]) -> contextlib.AbstractContextManager[None]:
    """The replicas' ``runtime_env`` variables (vLLM's hash of its environment is part of its
    cache key) set for the build, and every variable the build changed (the warm start's
    ``VLLM_CACHE_ROOT``) put back after it."""
    from llm_init.steps.warm_start import VLLM_CACHE_ROOT

    return environment({k: str(v) for k, v in env.items()}, also_restore=[VLLM_CACHE_ROOT])


def _shut_down(engine: Any) -> None:
    shutdown = getattr(engine, "shutdown", None)
    if callable(shutdown):
        try:
            shutdown()
        except Exception as exc:  # the artifact is published; a slow teardown is only logged
            _log.warning("llm-init: the warm-build engine did not shut down cleanly: %s",
                         exception_message(exc))


__all__ = ["BuildError", "BuildOutcome", "BuildTarget", "build", "build_here", "serve_targets"]
