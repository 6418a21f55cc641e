"""Runs Ray Serve LLM's own callbacks (``CallbackBase``) through llm-init's dispatcher.

Ray Serve LLM's own callbacks (``callback_config`` with a ``CallbackBase`` subclass) under
llm-init: each of their three hooks runs once, at its equivalent point, through llm-init's
dispatcher (so it is recorded and traced like any hook), and what it changes on Ray's
``CallbackCtx`` carries over to llm-init's context.

| Ray hook | runs in llm-init's | as in Ray |
|---|---|---|
| ``on_before_node_init`` | ``on_pre_initialization`` | first, before any node work |
| ``on_before_download_model_files_distributed`` | ``on_pre_download`` | before the download (not when ``run_init_node`` is ``False``) |
| ``on_after_node_init`` | ``on_post_download`` | after the download, with the engine config pointing at the local model |

``run_init_node = False`` skips the download step. ``worker_node_download_model`` sets both of
llm-init's download modes (Ray applies it to every node), ``placement_group`` and
``runtime_env`` replace llm-init's, and ``custom_data`` keys are copied into llm-init's
``custom_data``. Only the Ray hooks the class overrides are called (Ray's are no-ops), each
recorded with its Ray name (the events' ``ray_hook``, the span's ``llm_init.ray_hook``). Ray's
``raise_error_on_callback`` keeps its meaning: a failing hook either fails the initialization
or is recorded as failed (``HookFailed``, with Ray's error text) and passed over.
"""  # noqa: E501

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ray.llm._internal.common.callbacks.base import CallbackBase

from llm_init.binding import BoundHook
from llm_init.config import NodeModelDownloadable
from llm_init.serve.settings import ServeConfigError
from llm_init.steps.engine import model_path_from, streamed_source

if TYPE_CHECKING:
    from llm_init.context import NodeInitializationContext

def has_hooks(ray_callback: object | None) -> bool:
    """Whether a Ray callback is a user's subclass (Ray's default ``CallbackBase`` does nothing)."""
    return ray_callback is not None and type(ray_callback) is not CallbackBase


def download_mode(value: Any) -> NodeModelDownloadable:
    """llm-init's download mode for Ray's ``NodeModelDownloadable`` (or its name)."""
    name = getattr(value, "name", value)
    try:
        return NodeModelDownloadable(str(name))
    except ValueError:
        allowed = ", ".join(m.value for m in NodeModelDownloadable)
        raise ServeConfigError(
            f"worker_node_download_model={name} has no llm-init equivalent (one of {allowed}); "
            "a streaming load format reads the weights itself: use NONE") from None


def point_engine_at(ray_llm_config: Any, path: str | None) -> None:
    """Make Ray Serve LLM's engine config load the model from ``path``: the local download, or
    the bucket URI a streaming load format reads."""
    if path is None:
        return
    engine_config = ray_llm_config.get_engine_config()
    engine_config.hf_model_id = path
    engine_config.mirror_config = None  # the model is local now: no mirror to resolve


RAY_HOOKS = {
    "on_pre_initialization": "on_before_node_init",
    "on_pre_download": "on_before_download_model_files_distributed",
    "on_post_download": "on_after_node_init",
}  # llm-init hook -> the Ray hook it runs


def overrides(ray_callback_class: type, ray_hook: str) -> bool:
    """Whether a Ray callback class has its own ``ray_hook`` (not ``CallbackBase``'s no-op)."""
    return getattr(ray_callback_class, ray_hook, None) is not getattr(CallbackBase, ray_hook)


class RayCallbackAdapter:
    """An llm-init callback that runs one Ray ``CallbackBase``'s hooks; see the module docs."""

    def __init__(self, ray_callback: Any) -> None:
        self.ray_callback = ray_callback

    async def on_pre_initialization(self, ctx: NodeInitializationContext) -> None:
        """Fires first; runs Ray's ``on_before_node_init``."""
        await self._run("on_before_node_init", ctx)

    async def on_pre_download(self, ctx: NodeInitializationContext) -> bool | None:
        """Fires before the download; runs Ray's ``on_before_download_model_files_distributed``,
        or returns ``False`` (skipping the download) when Ray's ``run_init_node`` is off."""
        if not self.ray_callback.ctx.run_init_node:
            return False
        await self._run("on_before_download_model_files_distributed", ctx)
        return None

    async def on_post_download(self, ctx: NodeInitializationContext) -> None:
        """Fires after the download; runs Ray's ``on_after_node_init`` with the engine config
        already pointing at the downloaded model, as Ray's node initialization leaves it."""
        point_engine_at(self.ray_callback.llm_config,
                        streamed_source(ctx) or model_path_from(ctx.download_result))
        await self._run("on_after_node_init", ctx)

    def llm_init_bound_hook(self, bound: BoundHook) -> BoundHook | tuple[BoundHook, ...] | None:
        """Only the Ray hooks the class overrides are called and recorded, each under its Ray
        name and with the Ray callback's ``raise_error_on_callback``. The download hook is
        decided when it is due: ``run_init_node`` may be switched off until then, and then the
        hook runs under its own name only to skip the download."""
        ray_hook = RAY_HOOKS.get(bound.hook)
        if ray_hook is None:
            return bound
        ray_callback = self.ray_callback
        raise_errors = bool(ray_callback.raise_error_on_callback)
        own = replace(bound, alias=ray_hook, raise_errors=raise_errors)
        overridden = overrides(type(ray_callback), ray_hook)
        if bound.hook != "on_pre_download":
            return own if overridden else None

        def skipping() -> bool:
            return not ray_callback.ctx.run_init_node

        # The skip comes first: it changes nothing, so the Ray hook's turn is judged as before.
        skip = replace(bound, raise_errors=raise_errors, when=skipping)
        if not overridden:
            return skip
        return skip, replace(own, when=lambda: not skipping())

    async def _run(self, hook: str, ctx: NodeInitializationContext) -> None:
        ray_callback = self.ray_callback
        before = _state(ray_callback.ctx)
        try:
            # Not Ray's run_callback: with raise_error_on_callback=False it swallows the
            # error, and the failure would be recorded as a success. The dispatcher applies
            # that setting instead (see llm_init_bound_hook); the error reads as Ray's.
            method, is_async = ray_callback._get_method(hook)
            try:
                if is_async:
                    await method()
                else:
                    method()
            except Exception as exc:
                raise Exception(  # Ray's own type and words
                    f"Error running callback method '{hook}' on "
                    f"{type(ray_callback).__name__}: {exc}") from exc
        finally:
            _carry_over(before, ray_callback.ctx, ctx)


def adapter_class_for(ray_callback_class: type) -> type[RayCallbackAdapter]:
    """A ``RayCallbackAdapter`` subclass named after the Ray class, so events, spans and errors
    name the user's callback: ``RayCallback[pkg.module.Class]``."""
    name = f"RayCallback[{ray_callback_class.__module__}.{ray_callback_class.__qualname__}]"
    return type(name, (RayCallbackAdapter,), {"__module__": __name__, "__qualname__": name})


def _state(ray_ctx: Any) -> dict[str, Any]:
    return {
        "worker_node_download_model": ray_ctx.worker_node_download_model,
        "placement_group": ray_ctx.placement_group,
        "runtime_env": copy.deepcopy(ray_ctx.runtime_env),
        "custom_data": dict(ray_ctx.custom_data),
    }


def _carry_over(before: dict[str, Any], ray_ctx: Any, ctx: NodeInitializationContext) -> None:
    if ray_ctx.worker_node_download_model != before["worker_node_download_model"]:
        mode = download_mode(ray_ctx.worker_node_download_model)
        ctx.worker_node_download_model = mode
        ctx.local_node_download_model = mode
    if ray_ctx.placement_group is not before["placement_group"]:
        ctx.placement_group = ray_ctx.placement_group
    if ray_ctx.runtime_env != before["runtime_env"]:
        ctx.runtime_env = copy.deepcopy(ray_ctx.runtime_env)
    old = before["custom_data"]
    for key, value in ray_ctx.custom_data.items():
        if key not in old or old[key] is not value:
            ctx.custom_data[key] = value
    for key in old.keys() - ray_ctx.custom_data.keys():
        ctx.custom_data.pop(key, None)


class _HooksAlreadyRan(CallbackBase):
    """Stands in for the user's Ray callback while Ray's own ``VLLMEngine.start()`` runs: the
    hooks already ran at their llm-init points; the context is the user's, shared."""

    def __init__(self, original: Any) -> None:
        super().__init__(llm_config=original.llm_config,
                         raise_error_on_callback=original.raise_error_on_callback)
        self.ctx = original.ctx

    async def run_callback(self, method_name: str) -> None:
        return None

    def run_callback_sync(self, method_name: str) -> None:
        return None


@contextlib.contextmanager
def hooks_already_ran(ray_llm_config: Any, ray_callback: Any) -> Iterator[None]:
    """While the block runs, Ray's ``get_or_create_callback()`` returns a stand-in whose hooks
    do nothing, so Ray's ``start()`` cannot call the user's hooks a second time."""
    saved = ray_llm_config._callback_instance
    ray_llm_config._callback_instance = _HooksAlreadyRan(ray_callback)
    try:
        yield
    finally:
        ray_llm_config._callback_instance = saved
