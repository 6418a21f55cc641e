"""Streaming load formats, as Ray Serve LLM has them: with a bucket source no node downloads
the weights, the engine is given the bucket URI, and the log says so and why; callbacks can
still ask for a download; a missing streamer fails before any node or engine works."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llm_init import (
    InMemoryEventStore,
    LLMConfig,
    NodeInitializationContext,
    StepError,
    initialize_node_sync,
    read_events,
)
from llm_init.config import NodeModelDownloadable
from llm_init.events import StepFailed, WeightsRouteChosen
from llm_init.replay import replay
from llm_init.steps.download import (
    STREAMING_LOAD_FORMATS,
    DownloadStep,
    SourceNotFoundError,
    StreamerMissingError,
    is_streaming_load_format,
    open_source,
    parse_source,
)
from llm_init.steps.engine import VLLMEngineStep, engine_model
from tests.support.models import write_model
from tests.support.s3 import MotoS3, running_moto_s3
from tests.support.steps import CallingStep, local_steps

NONE, TOKENIZER_ONLY, ALL = (NodeModelDownloadable.NONE, NodeModelDownloadable.TOKENIZER_ONLY,
                             NodeModelDownloadable.MODEL_AND_TOKENIZER)


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[MotoS3]:
    with running_moto_s3() as server:
        yield server


@pytest.fixture(scope="module")
def bucket_model(moto_s3: MotoS3, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small two-shard model in the bucket: its ``s3://`` URI."""
    src = tmp_path_factory.mktemp("model")
    write_model(src, shards=2, shard_size=100_000)
    return moto_s3.upload_dir(src, "models/streamed")


def streaming_config(source: str, load_format: str = "runai_streamer",
                     **kwargs: Any) -> LLMConfig:
    return LLMConfig(model_id="tiny", model_source=source,
                     engine_kwargs={"load_format": load_format}, **kwargs)


class AsksForWeights:
    """Wants the weights on local disk despite the streaming load format."""

    def on_pre_download(self, ctx: NodeInitializationContext) -> None:
        ctx.local_node_download_model = NodeModelDownloadable.MODEL_AND_TOKENIZER


def run(config: LLMConfig, moto_s3: MotoS3, cache: Path
        ) -> tuple[NodeInitializationContext, list[Any], list[str]]:
    """An initialization with the real download step; the engine step records its model."""
    store = InMemoryEventStore()
    models: list[str] = []
    steps = local_steps(download=DownloadStep(endpoint_url=moto_s3.endpoint_url,
                                              cache_dir=cache),
                        engine=CallingStep(lambda ctx: models.append(engine_model(ctx))))
    ctx = initialize_node_sync(config, event_store=store, steps=steps)
    return ctx, read_events(store, ctx.init_id), models


def files_under(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


def test_the_streaming_load_formats_are_ray_serve_llms() -> None:
    """The load formats that stream are exactly those Ray Serve LLM streams."""
    from ray.llm._internal.common.utils.download_utils import (
        STREAMING_LOAD_FORMATS as RAYS,
    )

    assert list(STREAMING_LOAD_FORMATS) == list(RAYS)


@pytest.mark.parametrize("load_format", STREAMING_LOAD_FORMATS)
@pytest.mark.parametrize("source", ["s3://models/tiny", "gs://models/tiny"])
def test_a_streaming_format_from_a_bucket_starts_every_node_at_none(load_format, source) -> None:
    """Under a streaming load format with a bucket source, local and worker nodes start with
    the download mode NONE, as Ray Serve LLM's worker nodes do."""
    ctx = NodeInitializationContext.for_config("i", streaming_config(source, load_format))
    assert (ctx.local_node_download_model, ctx.worker_node_download_model) == (NONE, NONE)


@pytest.mark.parametrize(("source", "engine_kwargs"), [
    ("s3://models/tiny", {}),
    ("s3://models/tiny", {"load_format": "safetensors"}),
    ("org/tiny", {"load_format": "runai_streamer"}),
    ("/models/tiny", {"load_format": "runai_streamer"}),
])
def test_other_formats_or_sources_keep_the_configured_modes(source, engine_kwargs) -> None:
    """Without a streaming format, or with a source vLLM cannot stream from (a repo id, a
    directory), the nodes download what the config says."""
    config = LLMConfig(model_id="tiny", model_source=source, engine_kwargs=engine_kwargs)
    ctx = NodeInitializationContext.for_config("i", config)
    assert (ctx.local_node_download_model, ctx.worker_node_download_model) == (ALL, ALL)
    assert is_streaming_load_format(config) == (engine_kwargs.get("load_format")
                                                == "runai_streamer")


def test_an_explicit_tokenizer_only_is_kept_under_streaming() -> None:
    """A node configured for TOKENIZER_ONLY keeps it under a streaming format: it never
    fetches weights, so nothing needs narrowing."""
    config = streaming_config("s3://models/tiny", local_node_download_model="TOKENIZER_ONLY")
    ctx = NodeInitializationContext.for_config("i", config)
    assert (ctx.local_node_download_model, ctx.worker_node_download_model) == (
        TOKENIZER_ONLY, NONE)


def test_a_streamed_start_downloads_nothing_and_gives_vllm_the_bucket(
        moto_s3, bucket_model, tmp_path) -> None:
    """A streamed start leaves the cache empty, records NONE for the node, and the engine
    step is given the bucket URI."""
    ctx, _, models = run(streaming_config(bucket_model), moto_s3, tmp_path)
    assert files_under(tmp_path) == []
    assert models == [bucket_model]
    assert ctx.download_result.streamed_from == bucket_model
    assert [(n.what, n.path, n.bytes_fetched) for n in ctx.download_result.nodes] == [
        (NONE, None, 0)]


def test_a_streamed_start_records_the_route_and_the_reason(moto_s3, bucket_model,
                                                            tmp_path) -> None:
    """The download phase records that vLLM streams the weights, why, and each node's mode;
    the timeline shows it in the download phase."""
    ctx, events, _ = run(streaming_config(bucket_model, "runai_streamer_sharded"), moto_s3,
                         tmp_path)
    (chosen,) = [e for e in events if isinstance(e, WeightsRouteChosen)]
    node = ctx.download_result.nodes[0].node_id
    assert (chosen.route, chosen.reason, chosen.load_format, chosen.source, chosen.modes) == (
        "streamed", "weights streamed by vLLM: load_format=runai_streamer_sharded",
        "runai_streamer_sharded", bucket_model, {node: "NONE"})
    entries = [(e.kind, e.phase, e.name) for e in replay(events).timeline
               if e.kind == "weights"]
    assert entries == [("weights", "download",
                        "streamed by vLLM: load_format=runai_streamer_sharded")]


def test_the_timeline_prints_the_reason(moto_s3, bucket_model, tmp_path) -> None:
    """``llm-init timeline`` prints the recorded reason in words."""
    from rich.console import Console

    from llm_init.cli.views import timeline_tree

    _, events, _ = run(streaming_config(bucket_model), moto_s3, tmp_path)
    console = Console(width=200, record=True)
    console.print(timeline_tree(replay(events)))
    assert "weights streamed by vLLM: load_format=runai_streamer" in console.export_text()


def test_a_callback_can_still_ask_for_the_weights(moto_s3, bucket_model, tmp_path) -> None:
    """A callback that sets MODEL_AND_TOKENIZER gets the weights downloaded and loaded from
    disk, and the log says the weights were downloaded, and why."""
    config = streaming_config(bucket_model, callback_class=AsksForWeights)
    ctx, events, models = run(config, moto_s3, tmp_path)
    (chosen,) = [e for e in events if isinstance(e, WeightsRouteChosen)]
    assert chosen.route == "downloaded"
    assert "MODEL_AND_TOKENIZER" in chosen.reason
    assert models == [ctx.download_result.path]
    assert ctx.download_result.streamed_from is None
    assert any(f.endswith(".safetensors") for f in files_under(tmp_path))


def test_without_a_streaming_format_the_weights_are_downloaded_as_before(
        moto_s3, bucket_model, tmp_path) -> None:
    """With no load format the bucket's weights are downloaded and nothing about streaming
    is recorded."""
    config = LLMConfig(model_id="tiny", model_source=bucket_model)
    ctx, events, models = run(config, moto_s3, tmp_path)
    assert not [e for e in events if isinstance(e, WeightsRouteChosen)]
    assert models == [ctx.download_result.path]
    assert any(f.endswith(".safetensors") for f in files_under(tmp_path))


def test_a_missing_streamer_fails_the_start_in_one_line_naming_the_extra(
        moto_s3, bucket_model, tmp_path, monkeypatch) -> None:
    """Without RunAI's streamer, a runai_streamer start fails in the download phase, before
    any engine, with one line naming the package and the extra ``llm-init[stream]``."""
    monkeypatch.setitem(sys.modules, "runai_model_streamer", None)  # import fails
    store = InMemoryEventStore()
    engine = CallingStep(lambda ctx: None)
    steps = local_steps(download=DownloadStep(endpoint_url=moto_s3.endpoint_url,
                                              cache_dir=tmp_path), engine=engine)
    with pytest.raises(StepError) as caught:
        initialize_node_sync(streaming_config(bucket_model), event_store=store, steps=steps)
    (failed,) = [e for e in read_events(store, store.list_init_ids()[0])
                 if isinstance(e, StepFailed)]
    assert (failed.step, failed.error_type) == ("download", "StreamerMissingError")
    assert "runai-model-streamer" in failed.message
    assert "llm-init[stream]" in failed.message
    assert "\n" not in str(caught.value)
    assert engine.calls == []


def test_the_engine_step_refuses_a_missing_streamer_before_building_the_engine(
        monkeypatch) -> None:
    """When the download was skipped, vLLM's engine step still refuses to start without the
    streamer's S3 backend, naming it and the extra."""
    import asyncio

    monkeypatch.setitem(sys.modules, "runai_model_streamer_s3", None)
    ctx = NodeInitializationContext.for_config("i", streaming_config("s3://models/tiny"))
    with pytest.raises(StreamerMissingError, match=r"runai-model-streamer-s3.*llm-init\[stream\]"):
        asyncio.run(VLLMEngineStep().run(ctx, lambda **details: None))
    assert ctx.engine is None


def test_a_gs_source_is_left_to_vllm_and_never_opened_by_the_download() -> None:
    """A ``gs://`` source is parsed, but opening it for a download fails saying that only
    vLLM's streaming load formats read it."""
    spec = parse_source("gs://bucket/models/tiny")
    assert (spec.kind, spec.uri) == ("gs", "gs://bucket/models/tiny")
    with pytest.raises(SourceNotFoundError, match="streaming load formats"):
        open_source(spec)


def test_the_streamer_check_leaves_torch_to_the_engine() -> None:
    """The check finds the installed streamer without importing it, so the download phase
    does not pay for the torch import the streamer brings (the engine's start does)."""
    import subprocess

    code = ("import sys\nfrom llm_init.steps.download import require_streamer\n"
            "require_streamer('runai_streamer', 's3://models/tiny')\n"
            "print(sorted(m for m in ('torch', 'runai_model_streamer') if m in sys.modules))")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                         text=True, timeout=120, env={"PYTHONPATH": str(root), "PATH": ""})
    assert (out.returncode, out.stdout.strip()) == (0, "[]"), out.stderr


@pytest.mark.parametrize("model_source", ["s3://models/tiny", {"bucket_uri": "s3://models/tiny"}])
def test_a_ray_serve_llm_config_is_judged_the_same_way(model_source) -> None:
    """A Ray Serve LLM ``LLMConfig`` streaming from a bucket (a URI or a mirror) is seen as
    streaming from it, as llm-init's own config is."""
    from ray.serve.llm import LLMConfig as RayLLMConfig

    from llm_init.steps.download import streams_from_bucket

    ray_config = RayLLMConfig(model_loading_config={"model_id": "tiny",
                                                    "model_source": model_source},
                              engine_kwargs={"load_format": "runai_streamer"})
    assert streams_from_bucket(ray_config)
    assert not streams_from_bucket(ray_config, {"load_format": "auto"})
