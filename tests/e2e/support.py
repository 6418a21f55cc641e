"""Callbacks and steps the end-to-end tests hand to Serve replicas (importable there)."""

from __future__ import annotations

import json
import os
import pathlib
import socket
from typing import Any

from ray.llm._internal.common.callbacks.base import CallbackBase

from llm_init import NodeInitializationContext

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

# What makes an in-process vLLM engine of the tiny model start in seconds on the CPU.
FAST_ENV = {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1",
            "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
FAST_KWARGS = {"dtype": "bfloat16", "enforce_eager": True, "max_model_len": 256,
               "max_num_seqs": 4, "max_num_batched_tokens": 256}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def replica_pythonpath() -> str:
    """The checkout first, so replicas import this llm-init and these test modules."""
    parts = [str(REPO_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return os.pathsep.join(dict.fromkeys(parts))


def _append(path: str, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, default=str) + "\n")


class AllHooks:
    """Implements all eight hooks; logs each call, and at the end the live context's snapshot."""

    def __init__(self, log: str) -> None:
        self.log = log

    def _hook(self, hook: str, ctx: NodeInitializationContext) -> None:
        _append(self.log, {"hook": hook, "pid": os.getpid()})

    def on_pre_initialization(self, ctx: NodeInitializationContext) -> None:
        self._hook("on_pre_initialization", ctx)

    def on_pre_download(self, ctx: NodeInitializationContext) -> None:
        self._hook("on_pre_download", ctx)

    def on_post_download(self, ctx: NodeInitializationContext) -> None:
        self._hook("on_post_download", ctx)

    def on_pre_placement_group(self, ctx: NodeInitializationContext) -> None:
        self._hook("on_pre_placement_group", ctx)

    def on_post_placement_group(self, ctx: NodeInitializationContext) -> None:
        self._hook("on_post_placement_group", ctx)

    def on_pre_engine_init(self, ctx: NodeInitializationContext) -> None:
        self._hook("on_pre_engine_init", ctx)
        ctx.extra_init_kwargs["max_num_seqs"] = 2  # wins over engine_kwargs' 4

    def on_post_engine_init(self, ctx: NodeInitializationContext) -> None:
        self._hook("on_post_engine_init", ctx)
        ctx.custom_data["engine_type"] = type(ctx.engine).__name__

    def on_post_initialization(self, ctx: NodeInitializationContext) -> None:
        self._hook("on_post_initialization", ctx)
        _append(self.log, {"live_snapshot": ctx.snapshot(), "init_id": ctx.init_id})


class PrefetchedModel:
    """Points the context at a model fetched beforehand and skips the download."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_pre_download(self, ctx: NodeInitializationContext) -> bool:
        ctx.download_result = {"local_path": self.path, "prefetched": True}
        return False


class MustNotRun:
    """A download step that leaves a marker if it ever runs."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        pathlib.Path(self.marker).write_text("the download step ran")


class RecordingRayCallback(CallbackBase):
    """A Ray Serve LLM callback, as a user of ray.serve.llm has one: logs each hook call and
    changes the context the way Ray's docs suggest."""

    def _log(self, hook: str, **extra: Any) -> None:
        _append(self.kwargs["log"], {"hook": hook, "pid": os.getpid(), **extra})

    async def on_before_node_init(self) -> None:
        self.ctx.custom_data["ray_marker"] = "set in on_before_node_init"
        env = dict(self.ctx.runtime_env or {})
        env["env_vars"] = {**env.get("env_vars", {}), "FROM_RAY_CALLBACK": "1"}
        self.ctx.runtime_env = env
        self._log("on_before_node_init", run_init_node=self.ctx.run_init_node)

    def on_before_download_model_files_distributed(self) -> None:
        self._log("on_before_download_model_files_distributed")

    async def on_after_node_init(self) -> None:
        self._log("on_after_node_init",
                  hf_model_id=self.llm_config.get_engine_config().hf_model_id)


class LocalDirectoryDownload:
    """A trivial download step: the model is already in a local directory."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        report(node_id="local", stage="node_completed", bytes_delta=0)
        ctx.download_result = str(self.path)


class FailingRayCallback(CallbackBase):
    """A Ray Serve LLM callback overriding two of Ray's three hooks, the first of which
    raises; with ``raise_error_on_callback=False`` Ray goes on, and so must the replica."""

    async def on_before_node_init(self) -> None:
        _append(self.kwargs["log"], {"hook": "on_before_node_init"})
        raise RuntimeError("no accelerator quota today")

    async def on_after_node_init(self) -> None:
        _append(self.kwargs["log"], {
            "hook": "on_after_node_init",
            "hf_model_id": self.llm_config.get_engine_config().hf_model_id})
