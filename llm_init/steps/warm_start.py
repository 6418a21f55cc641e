"""The warm-start restore, a default step: restores the matching artifact on each node.

The warm-start restore, a default step: after the model files, each node that downloaded them
restores the matching artifact into its local cache, and vLLM is pointed at it.

``WarmStartDownload`` wraps the download phase's step, so a pre-download hook that returns
``False`` skips the restore too. What it did is on the context, and so in the log, for callbacks
and for what comes after (``ctx.custom_data["llm_init.warm_start"]``: the key, its parts, the
result, the local cache directory), and in ``ArtifactRestored``/``ArtifactMissed`` events, one
per node. ``WarmStartEngine`` wraps the engine step: vLLM reads its cache directory from
``VLLM_CACHE_ROOT``, which it sets from that recorded context while the engine starts, and
publishing after the replica is ready reads its plan from the same record
(``capture_plan``). The initialization never fails because of a warm start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llm_init.artifacts.key import (
    ArtifactKey,
    artifact_key,
    device_identity,
    weights_of_directory,
    weights_of_listing,
)
from llm_init.artifacts.settings import ArtifactSettings
from llm_init.artifacts.stores import open_artifact_store
from llm_init.artifacts.transfer import (
    DISABLED,
    HIT,
    LOCAL_ERROR,
    MISS,
    TIMEOUT,
    VERSION_MISMATCH,
    RestoreOutcome,
    restore,
)
from llm_init.environ import environment
from llm_init.events import ArtifactMissed, ArtifactRestored
from llm_init.steps.base import DefaultStep, DefaultSteps, ProgressReporter
from llm_init.telemetry import names, spans
from llm_init.telemetry.redaction import exception_message
from llm_init.text import printable

if TYPE_CHECKING:
    from llm_init.context import NodeInitializationContext

CONTEXT_KEY = "llm_init.warm_start"
PUBLISH_KEY = "llm_init.warm_start.publish"  # False vetoes publishing; a URL redirects it
VLLM_CACHE_ROOT = "VLLM_CACHE_ROOT"

_log = logging.getLogger(__name__)
MESSAGE_CHARS = 2000  # of a miss's message in the log


@dataclass(frozen=True, slots=True)
class CapturePlan:
    """What to publish once the replica is ready: this node's cache directory under ``key``."""

    settings: ArtifactSettings
    key: ArtifactKey
    cache_root: str
    restored: bool


def capture_plan(ctx: NodeInitializationContext) -> CapturePlan | None:
    """What the warm start of ``ctx`` left to publish, from what it recorded on the context;
    ``None`` when it has no warm start (no ``artifact_store``, or no key was made)."""
    from llm_init.artifacts.settings import artifact_settings

    warm = ctx.custom_data.get(CONTEXT_KEY)
    settings = artifact_settings(ctx.llm_config.artifact_store)
    if settings is None or not isinstance(warm, Mapping) or not warm.get("artifact"):
        return None
    key = ArtifactKey(str(warm["artifact"]),
                      {str(k): str(v) for k, v in dict(warm.get("parts") or {}).items()})
    return CapturePlan(settings, key, str(warm["cache_dir"]), warm.get("result") == HIT)


@dataclass(frozen=True, slots=True)
class WarmStartEngine:
    """The engine step with ``VLLM_CACHE_ROOT`` set, while it runs, to the cache directory the
    restore recorded on the context: vLLM compiles into (and reads from) that directory, and
    the process's environment is left as it was."""

    engine: DefaultStep

    async def run(self, ctx: NodeInitializationContext, report: ProgressReporter) -> None:
        warm = ctx.custom_data.get(CONTEXT_KEY)
        cache_dir = warm.get("cache_dir") if isinstance(warm, Mapping) else None
        if not cache_dir:
            await self.engine.run(ctx, report)
            return
        with environment({VLLM_CACHE_ROOT: str(cache_dir)}):
            await self.engine.run(ctx, report)


@dataclass(frozen=True, slots=True)
class WarmStartDownload:
    """The download step, then the warm-start restore on every node it downloaded on."""

    download: DefaultStep
    settings: ArtifactSettings

    async def run(self, ctx: NodeInitializationContext, report: ProgressReporter) -> None:
        await self.download.run(ctx, report)
        await restore_warm_start(ctx, report, self.settings)


async def restore_warm_start(ctx: NodeInitializationContext, report: ProgressReporter,
                             settings: ArtifactSettings) -> None:
    """Compute the key, restore on each node, point vLLM at the cache; never raises."""
    from llm_init.steps.engine import merged_engine_kwargs, model_path_from, streamed_source

    record = getattr(report, "record", None)
    try:
        model_path = model_path_from(ctx.download_result)
    except TypeError:
        model_path = None
    streamed = streamed_source(ctx)
    if streamed is not None:
        model_path = None  # vLLM reads the bucket, whatever small files a node holds
    elif model_path is None:
        _log.info("llm-init: no warm start: the download phase left no model directory")
        return
    started = time.perf_counter()
    engine_kwargs = merged_engine_kwargs(ctx)
    engine_kwargs.setdefault("tensor_parallel_size", ctx.llm_config.tensor_parallel_size)
    engine_kwargs.setdefault("pipeline_parallel_size", ctx.llm_config.pipeline_parallel_size)
    try:
        if model_path is None:
            weights = await asyncio.to_thread(weights_of_bucket, str(streamed))
        else:
            weights = await asyncio.to_thread(weights_of_directory, model_path,
                                              _manifest_checksums(model_path))
        key = artifact_key(source=ctx.llm_config.source,
                           revision=getattr(ctx.download_result, "revision", None),
                           weights=weights, engine_kwargs=engine_kwargs)
    except Exception as exc:  # the warm start is an optimization: never fail the phase
        _log.warning("llm-init: no warm start: cannot compute the artifact key: %s",
                     exception_message(exc))
        return
    cache_root = Path(settings.cache_dir).expanduser() / key.digest
    local = _local_node_id()
    attributes = {names.ATTR_ARTIFACT_KEY: key.digest, names.ATTR_NODE_ID: local}
    with spans.current_tracer().start_as_current_span(names.SPAN_ARTIFACT_RESTORE,
                                                      attributes=attributes) as span:
        outcome = await _restore_here(settings, key, cache_root) if settings.restore else \
            RestoreOutcome(result=MISS, key=key.digest, reason=DISABLED,
                           message="artifact_store.restore is off")
        outcomes = {local: outcome}
        outcomes.update(await _restore_on_other_nodes(ctx, settings, key, local,
                                                      streamed=streamed is not None))
        span.set_attribute(names.ATTR_ARTIFACT_RESULT, outcome.result)
        span.set_attribute(names.ATTR_ARTIFACT_BYTES, outcome.bytes)
        if outcome.reason:
            span.set_attribute(names.ATTR_ARTIFACT_REASON, outcome.reason)
    for node, result in outcomes.items():
        _record(record, report, settings, key, result, node)
    if outcomes.keys() - {local}:
        env = dict((ctx.runtime_env or {}).get("env_vars") or {})
        env[VLLM_CACHE_ROOT] = str(cache_root)
        ctx.runtime_env = {**(ctx.runtime_env or {}), "env_vars": env}
    link = _link_model(settings, weights, model_path) if model_path is not None else None
    if link is not None:
        ctx.download_result = _with_path(ctx.download_result, link)
    ctx.custom_data[CONTEXT_KEY] = {
        "artifact": key.digest, "result": outcome.result, "reason": outcome.reason,
        "store": settings.location, "cache_dir": str(cache_root),
        "model_path": link or model_path or streamed,
        "bytes": outcome.bytes, "seconds": round(time.perf_counter() - started, 3),
        "parts": dict(key.parts)}


async def _restore_here(settings: ArtifactSettings, key: ArtifactKey,
                        cache_root: Path) -> RestoreOutcome:
    started = time.perf_counter()
    cancelled = threading.Event()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[RestoreOutcome] = loop.create_future()

    def finish(outcome: RestoreOutcome) -> None:
        if not done.done():
            done.set_result(outcome)

    def work() -> None:
        try:
            store = open_artifact_store(settings.url, endpoint_url=settings.endpoint_url,
                                        timeout_s=settings.timeout_s)
            outcome = restore(store, key.digest, key.parts, cache_root,
                              cancelled=cancelled.is_set, max_bytes=settings.max_bytes,
                              trust=settings.trust())
        except Exception as exc:
            outcome = RestoreOutcome(result=MISS, key=key.digest, reason=LOCAL_ERROR,
                                     message=exception_message(exc))
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
            loop.call_soon_threadsafe(finish, outcome)

    # A daemon thread, not ``asyncio.to_thread``: a fetch that hangs past the deadline must
    # not hold ``asyncio.run`` (which joins its executor's threads) or the process's exit.
    threading.Thread(target=work, name=f"llm-init-restore-{key.digest[:8]}",
                     daemon=True).start()
    try:
        return await asyncio.wait_for(asyncio.shield(done), settings.timeout_s)
    except TimeoutError:
        cancelled.set()  # a late finish must not fill the cache the engine compiles into
        return RestoreOutcome(result=MISS, key=key.digest, reason=TIMEOUT,
                              message=f"the restore took over {settings.timeout_s} s",
                              seconds=time.perf_counter() - started)


def restore_on_node(settings: ArtifactSettings, key: ArtifactKey, weights_path: str | None,
                    deadline: float | None = None) -> RestoreOutcome:
    """The restore on one node (a Ray task's body): refused if this node's device differs
    from the one the key was made on; the model link made as on the first node. Past
    ``deadline`` (seconds since the epoch, as ``time.time()``) the first node has given up
    waiting: the restore puts nothing in the cache."""
    here = device_identity()
    differing = [k for k, v in here.items() if key.parts.get(k) != v]
    if differing:
        return RestoreOutcome(result=MISS, key=key.digest, reason=VERSION_MISMATCH,
                              message=f"this node's {', '.join(differing)} differ")
    cache_root = Path(settings.cache_dir).expanduser() / key.digest
    if weights_path is not None:
        _link_model(settings, key.parts.get("model.weights", ""), weights_path)
    store = open_artifact_store(settings.url, endpoint_url=settings.endpoint_url,
                                timeout_s=settings.timeout_s)

    def cancelled() -> bool:
        return deadline is not None and time.time() > deadline

    if cancelled():
        return RestoreOutcome(result=MISS, key=key.digest, reason=TIMEOUT,
                              message="started after the first node stopped waiting")
    return restore(store, key.digest, key.parts, cache_root, cancelled=cancelled,
                   max_bytes=settings.max_bytes, trust=settings.trust())


async def _restore_on_other_nodes(ctx: NodeInitializationContext, settings: ArtifactSettings,
                                  key: ArtifactKey, local: str, *,
                                  streamed: bool = False) -> dict[str, RestoreOutcome]:
    # A node that holds no model has no engine worker to compile, unless vLLM streams the
    # weights: then no node holds them, and each one's workers compile all the same.
    nodes = [n for n in getattr(ctx.download_result, "nodes", ()) or ()
             if getattr(n, "node_id", local) != local
             and (streamed or getattr(n, "path", None))]
    if not nodes or not settings.restore:
        return {}
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = _remote_restore()
    deadline = time.time() + settings.timeout_s
    refs = {}
    for node in nodes:
        options: dict[str, Any] = {
            "num_cpus": 0, "name": "llm_init.artifact_restore",
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node.node_id,
                                                                  soft=False)}
        if ctx.runtime_env:
            options["runtime_env"] = ctx.runtime_env
        refs[node.node_id] = task.options(**options).remote(settings, key, node.path,
                                                                   deadline)
    found: dict[str, RestoreOutcome] = {}
    for node_id, ref in refs.items():
        try:
            found[node_id] = await asyncio.wait_for(
                asyncio.wrap_future(ref.future()), max(0.0, deadline - time.time()))
        except TimeoutError:
            ray.cancel(ref)
            found[node_id] = RestoreOutcome(result=MISS, key=key.digest, reason=TIMEOUT,
                                            message=f"over {settings.timeout_s} s")
        except Exception as exc:
            found[node_id] = RestoreOutcome(result=MISS, key=key.digest, reason=LOCAL_ERROR,
                                            message=exception_message(exc))
    return found


@functools.cache
def _remote_restore() -> Any:
    """``restore_on_node`` as a Ray remote function, made once per process."""
    import ray

    return ray.remote(restore_on_node)


def _record(record: Any, report: ProgressReporter, settings: ArtifactSettings, key: ArtifactKey,
            outcome: RestoreOutcome, node: str) -> None:
    # A miss's message can quote what the store holds (a manifest's names): untrusted text,
    # made one printable line before it reaches the log and the terminal.
    outcome = dataclasses.replace(outcome, message=printable(outcome.message, MESSAGE_CHARS)
                                  if outcome.message else outcome.message)
    if outcome.result == HIT:
        fields: dict[str, Any] = dict(key=key.digest, store=settings.location,
                                      bytes=outcome.bytes, files=outcome.files,
                                      seconds=outcome.seconds, node=node, path=outcome.path,
                                      parts=dict(key.parts), signed_by=outcome.signed_by)
        event_type: Any = ArtifactRestored
    else:
        fields = dict(key=key.digest, store=settings.location, reason=outcome.reason or "",
                      message=outcome.message or "", seconds=outcome.seconds, node=node,
                      parts=dict(key.parts), nearest=outcome.nearest,
                      differs={k: list(v) for k, v in outcome.differs.items()})
        event_type = ArtifactMissed
    if record is not None:
        record(event_type, **fields)
    else:  # a reporter without typed events: the outcome still reaches the log
        report(warm_start=outcome.result, **{k: v for k, v in fields.items() if k != "parts"})
    _log.info("llm-init: warm start on %s: %s%s (key %s)", node, outcome.result,
              f" ({outcome.reason}: {outcome.message})" if outcome.reason else "", key.digest)


def weights_of_bucket(uri: str) -> str:
    """``weights_identity`` of a model in a bucket from its listing (sizes, checksums or
    ETags), none of its objects read: the files a download would fetch, identified as
    ``weights_of_directory`` identifies their downloaded copy, so an artifact made by a start
    that downloaded the model serves one that streams it, and the other way round. The
    endpoint is the environment's (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``)."""
    from llm_init.config import NodeModelDownloadable
    from llm_init.steps.download import open_source, parse_source, select_files

    listing = open_source(parse_source(uri)).listing()
    files = select_files(listing.files, NodeModelDownloadable.MODEL_AND_TOKENIZER)
    return weights_of_listing((f.path, f.size, f.checksum.value if f.checksum is not None
                               else f.version) for f in files)


def _manifest_checksums(model_path: str) -> dict[str, str | None]:
    """Per file, the checksum (else the ETag) the download recorded, where it recorded one."""
    from llm_init.steps.download.manifest import read_manifest

    listing = read_manifest(Path(model_path))
    if listing is None:
        return {}
    return {f.path: (f.checksum.value if f.checksum is not None else f.version) or None
            for f in listing.files}


def _link_model(settings: ArtifactSettings, weights: str, model_path: str) -> str | None:
    """``model_link_dir/<weights>`` pointing at ``model_path``: the same path on every node;
    ``None`` (the engine loads ``model_path``) when the directory is not this user's alone."""
    if settings.model_link_dir is None:
        return None
    link = Path(settings.model_link_dir).expanduser() / weights
    try:
        link.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Whoever can write to the directory can point the link, and so the engine, at a
        # model of their own: another local user who made it first, or anyone if it is open.
        found = link.parent.stat()
        if found.st_uid != os.geteuid() or found.st_mode & 0o022:
            _log.warning(
                "llm-init: the engine loads %s directly (no model link: %s is %s; use a "
                "directory of this user's that only it can write to)", model_path, link.parent,
                f"owned by uid {found.st_uid}" if found.st_uid != os.geteuid()
                else f"writable by others (mode {found.st_mode & 0o777:o})")
            return None
        if link.is_symlink() and os.readlink(link) == model_path:
            return str(link)
        tmp = link.with_name(f".{link.name}.{os.getpid()}.{threading.get_ident()}")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(model_path, target_is_directory=True)
        os.replace(tmp, link)  # atomic: a concurrent reader sees the old link or the new
    except OSError as exc:
        _log.warning("llm-init: the engine loads %s directly (no model link: %s)", model_path,
                     exception_message(exc))
        return None
    return str(link)


def _with_path(download_result: Any, path: str) -> Any:
    if isinstance(download_result, str | os.PathLike):
        return path
    if isinstance(download_result, Mapping):
        key = "local_path" if "local_path" in download_result else "path"
        return {**download_result, key: path}
    if dataclasses.is_dataclass(download_result) and not isinstance(download_result, type):
        name = "local_path" if hasattr(download_result, "local_path") else "path"
        return dataclasses.replace(download_result, **{name: path})
    return download_result


def _local_node_id() -> str:
    from llm_init.steps.download.fanout import this_node_id

    return this_node_id()


def with_warm_start(download: DefaultStep, settings: ArtifactSettings | None) -> DefaultStep:
    """``download`` wrapped with the warm-start restore when ``settings`` is set."""
    if settings is None or isinstance(download, WarmStartDownload):
        return download
    return WarmStartDownload(download, settings)


def with_warm_start_steps(steps: DefaultSteps, settings: ArtifactSettings | None
                          ) -> DefaultSteps:
    """``steps`` with the restore after the download and the engine started on the restored
    cache, when ``settings`` is set."""
    if settings is None:
        return steps
    engine = steps.engine if isinstance(steps.engine, WarmStartEngine) \
        else WarmStartEngine(steps.engine)
    return dataclasses.replace(steps, download=with_warm_start(steps.download, settings),
                               engine=engine)


__all__ = ["CONTEXT_KEY", "PUBLISH_KEY", "CapturePlan", "WarmStartDownload",
           "WarmStartEngine", "capture_plan", "restore_warm_start", "with_warm_start",
           "with_warm_start_steps"]
