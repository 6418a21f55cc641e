"""Shared pieces of the warm-start tests: a cache shaped like vLLM's, an engine step that
caches as a compile would, one initialization on a "node", signing keys."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from llm_init import DefaultSteps, InMemoryEventStore, LLMConfig, initialize_node_sync
from llm_init.artifacts.publishing import start_publish
from llm_init.context import NodeInitializationContext
from llm_init.events import Event
from llm_init.replay import read_events
from llm_init.steps.base import ProgressReporter
from llm_init.steps.download import DownloadStep
from llm_init.steps.engine import model_path_from
from llm_init.stores import EventStore
from tests.support.models import write_model
from tests.support.steps import SettingStep

PARTS = {"vllm": "0.32.0", "torch": "2.13.0", "model.weights": "abc"}
KEY = "k" * 24


def make_cache(root: Path) -> Path:
    """A cache directory shaped like vLLM's: compiled code and model inspection."""
    (root / "torch_compile_cache" / "abc" / "rank_0_0").mkdir(parents=True)
    (root / "torch_compile_cache" / "abc" / "rank_0_0" / "vllm_compile_cache.py").write_text(
        "{}\n" * 50)
    (root / "modelinfos").mkdir()
    (root / "modelinfos" / "llama.json").write_bytes(b"\x00\x01" * 3000)
    return root


def write_key_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """A fresh Ed25519 key pair as PEM files: ``(private, public)``."""
    key = Ed25519PrivateKey.generate()
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / f"{name}.pem", directory / f"{name}.pub.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


class CachingEngineStep:
    """Records what vLLM would see (its cache root, its model path, what is cached there),
    then caches a file there as a compile would."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def run(self, ctx: NodeInitializationContext, report: ProgressReporter) -> None:
        ctx.engine = "engine"
        if "VLLM_CACHE_ROOT" not in os.environ:  # no warm start: vLLM's default cache
            self.seen.append({"root": None, "warm": False})
            return
        root = Path(os.environ["VLLM_CACHE_ROOT"])
        cached = root / "torch_compile_cache" / "abc" / "rank_0_0" / "graph.py"
        self.seen.append({"root": root, "model": model_path_from(ctx.download_result),
                          "warm": cached.exists()})
        report(subphase="torch_compile", duration_s=1.0 if cached.exists() else 9.0)
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text("compiled\n")


@pytest.fixture(autouse=True)
def cache_root_env() -> Iterator[None]:
    """Each test leaves ``VLLM_CACHE_ROOT`` as it found it (a warm start sets it)."""
    before = os.environ.get("VLLM_CACHE_ROOT")
    yield
    if before is None:
        os.environ.pop("VLLM_CACHE_ROOT", None)
    else:
        os.environ["VLLM_CACHE_ROOT"] = before


def start(tmp_path: Path, node: str, store_url: str, engine: CachingEngineStep, *,
          callbacks: list[type] | None = None, publish: bool = True,
          observers: list[Any] | None = None, event_store: EventStore | None = None,
          ) -> tuple[NodeInitializationContext, list[Event]]:
    """One initialization on a "node" with its own download and compile caches."""
    source = tmp_path / "model"
    if not source.exists():
        write_model(source, shards=1, shard_size=50_000)
    return start_from(tmp_path, node, store_url, engine, source=str(source),
                      callbacks=callbacks, publish=publish, observers=observers,
                      event_store=event_store)


def start_from(tmp_path: Path, node: str, store_url: str, engine: CachingEngineStep, *,
               source: str, load_format: str | None = None,
               callbacks: list[type] | None = None, publish: bool = True,
               observers: list[Any] | None = None, event_store: EventStore | None = None,
               ) -> tuple[NodeInitializationContext, list[Event]]:
    """``start`` of the model at ``source`` (an ``s3://`` URI too), with ``load_format``."""
    if store_url.startswith("file://"):  # the shared directory, mounted on every node
        Path(store_url.removeprefix("file://")).mkdir(exist_ok=True)
    engine_kwargs: dict[str, Any] = {"dtype": "bfloat16", "max_model_len": 256}
    if load_format is not None:
        engine_kwargs["load_format"] = load_format
    config = LLMConfig(model_id="tiny", model_source=source, callback_class=callbacks,
                       engine_kwargs=engine_kwargs,
                       artifact_store={"url": store_url,
                                       "cache_dir": str(tmp_path / node / "warm"),
                                       "model_link_dir": str(tmp_path / "links")})
    steps = DefaultSteps(download=DownloadStep(cache_dir=tmp_path / node / "models"),
                         placement_group=SettingStep("placement_group", None), engine=engine)
    store = event_store if event_store is not None else InMemoryEventStore()
    ctx = initialize_node_sync(config, event_store=store, steps=steps,
                               observers=observers or [])
    if publish:
        thread = start_publish(ctx, event_store=store, observers=observers or [])
        if thread is not None:
            thread.join(60)
    return ctx, list(read_events(store, ctx.init_id))


def of_type(events: list[Event], kind: type[Event]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]
