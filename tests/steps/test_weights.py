"""Which weight files vLLM loads and their sizes (local directories and S3 buckets), and the
record of each worker's load: a ``WeightsLoaded`` event and a ``weight_loading`` span."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llm_init import (
    DefaultSteps,
    InMemoryEventStore,
    LLMConfig,
    NodeInitializationContext,
    initialize_node,
    read_events,
)
from llm_init.events import WeightsLoaded
from llm_init.steps.download.fanout import this_node_id
from llm_init.steps.vllm_log_parser import WeightLoad
from llm_init.steps.weights import WeightFiles, loaded_from, record_weight_loading, weight_files
from llm_init.telemetry import names
from tests.support.models import write_model
from tests.support.s3 import running_moto_s3
from tests.support.steps import SettingStep


def test_the_default_loader_takes_the_shards_its_index_names(tmp_path: Path) -> None:
    """Two indexed shards and a consolidated file beside them: vLLM loads the shards only."""
    files = write_model(tmp_path, shards=2, shard_size=64 * 1024,
                        extra={"consolidated.safetensors": 128 * 1024})
    shards = {n: s for n, s in files.items() if n.startswith("model-")}
    assert weight_files(str(tmp_path)) == WeightFiles(str(tmp_path), shards)


def test_the_overlapped_starts_loader_takes_what_the_default_loader_takes(tmp_path: Path) -> None:
    """Under llm-init's overlap load format (vLLM's default loader waiting for each file) the
    recorded weights are the indexed shards, as with the default loader."""
    files = write_model(tmp_path, shards=2, shard_size=64 * 1024,
                        extra={"consolidated.safetensors": 128 * 1024})
    shards = {n: s for n, s in files.items() if n.startswith("model-")}
    assert weight_files(str(tmp_path), "llm_init_overlap") == WeightFiles(str(tmp_path), shards)


def test_without_an_index_every_top_level_safetensors_file_counts(tmp_path: Path) -> None:
    """One ``model.safetensors`` and a file in a subdirectory: the top-level one only."""
    files = write_model(tmp_path, shards=1, shard_size=64 * 1024,
                        extra={"sub/other.safetensors": 1024})
    found = weight_files(str(tmp_path))
    assert found is not None
    assert found.sizes == {"model.safetensors": files["model.safetensors"]}
    assert found.bytes == files["model.safetensors"]


def test_pytorch_bins_count_when_there_are_no_safetensors(tmp_path: Path) -> None:
    """A checkpoint of ``.bin`` files (and vLLM's skipped training state): the weights only."""
    (tmp_path / "pytorch_model.bin").write_bytes(b"w" * 3000)
    (tmp_path / "training_args.bin").write_bytes(b"t" * 10)
    assert weight_files(str(tmp_path)) == WeightFiles(str(tmp_path),
                                                      {"pytorch_model.bin": 3000})


def test_the_streamer_takes_every_safetensors_file_of_the_directory(tmp_path: Path) -> None:
    """runai_streamer ignores the index: a consolidated file beside the shards is streamed."""
    files = write_model(tmp_path, shards=2, shard_size=64 * 1024,
                        extra={"consolidated.safetensors": 128 * 1024})
    found = weight_files(str(tmp_path), "runai_streamer")
    assert found is not None
    assert found.sizes == {n: s for n, s in files.items() if n.endswith(".safetensors")}


def test_a_bucket_is_sized_from_its_listing(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """s3://bucket/prefix: the sizes of its top-level safetensors objects, as listed."""
    files = write_model(tmp_path, shards=2, shard_size=96 * 1024)
    with running_moto_s3() as s3:
        uri = s3.upload_dir(tmp_path, "models/sharded")
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint_url)
        found = weight_files(uri, "runai_streamer")
    assert found == WeightFiles(uri, {n: s for n, s in files.items()
                                      if n.endswith(".safetensors")})


def test_a_model_vllm_fetches_itself_is_not_sized() -> None:
    """A Hub id (no directory, no bucket) cannot be sized here."""
    assert weight_files("org/model") is None


def test_streaming_config_loads_from_the_bucket_uri_vllm_keeps() -> None:
    """vLLM points ``model`` at a local copy of the small files and keeps the bucket in
    ``model_weights``; the load format is lower-cased as vLLM does."""
    config = SimpleNamespace(
        model_config=SimpleNamespace(model="/root/.cache/vllm/assets/model_streamer/7d8f",
                                     model_weights="s3://models/tiny"),
        load_config=SimpleNamespace(load_format="RUNAI_STREAMER"))
    assert loaded_from(config) == ("s3://models/tiny", "runai_streamer")


class Recording:
    """An engine step that records two workers' loads of the model in ``path``."""

    def __init__(self, path: Path, loads: list[WeightLoad]) -> None:
        self.path = path
        self.loads = loads

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        config = SimpleNamespace(model_config=SimpleNamespace(model=str(self.path),
                                                              model_weights=""),
                                 load_config=SimpleNamespace(load_format="auto"))
        record_weight_loading(ctx, report, self.loads, config)
        ctx.engine = "engine"


def test_each_workers_load_is_an_event_and_a_span_under_the_engine_step(
        tmp_path: Path) -> None:
    """One ``WeightsLoaded`` per worker with the files' bytes over its seconds, and a
    ``weight_loading`` span drawn where its log line put it, a child of the step's span."""
    files = write_model(tmp_path / "m", shards=1, shard_size=200_000)
    size = files["model.safetensors"]
    loads = [WeightLoad("VllmWorker-0", 0.5, 1_800_000_000.5, "vllm_log"),
             WeightLoad("VllmWorker-1", 0.0, 1_800_000_000.7, "vllm_log")]
    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    store = InMemoryEventStore()
    steps = DefaultSteps(download=SettingStep("download_result", str(tmp_path / "m")),
                         placement_group=SettingStep("placement_group", None),
                         engine=Recording(tmp_path / "m", loads))
    asyncio.run(initialize_node(LLMConfig(model_id="m"), event_store=store, steps=steps,
                                tracer_provider=provider))
    (init_id,) = store.list_init_ids()
    recorded = [e for e in read_events(store, init_id) if isinstance(e, WeightsLoaded)]
    node = this_node_id()
    assert [(e.bytes, e.files, e.seconds, e.bytes_per_s, e.worker, e.node, e.ended_at)
            for e in recorded] == [
        (size, 1, 0.5, round(size / 0.5, 1), "VllmWorker-0", node, 1_800_000_000.5),
        (size, 1, 0.0, None, "VllmWorker-1", node, 1_800_000_000.7)]
    weight_spans = [s for s in exporter.get_finished_spans()
                    if s.name == names.SPAN_WEIGHT_LOADING]
    (step,) = [s for s in exporter.get_finished_spans()
               if s.name == f"{names.SPAN_STEP_PREFIX}engine"]
    assert [(s.start_time, s.end_time, dict(s.attributes or {})) for s in weight_spans] == [
        (1_800_000_000_000_000_000, 1_800_000_000_500_000_000, {
            names.ATTR_WEIGHT_BYTES: size, names.ATTR_WEIGHT_FILES: 1,
            names.ATTR_WEIGHT_SECONDS: 0.5, names.ATTR_WEIGHT_BYTES_PER_S: round(size / 0.5, 1),
            names.ATTR_WEIGHT_LOAD_FORMAT: "auto", names.ATTR_WEIGHT_WORKER: "VllmWorker-0",
            names.ATTR_NODE_ID: node}),
        (1_800_000_000_700_000_000, 1_800_000_000_700_000_000, {
            names.ATTR_WEIGHT_BYTES: size, names.ATTR_WEIGHT_FILES: 1,
            names.ATTR_WEIGHT_SECONDS: 0.0, names.ATTR_WEIGHT_LOAD_FORMAT: "auto",
            names.ATTR_WEIGHT_WORKER: "VllmWorker-1", names.ATTR_NODE_ID: node})]
    assert {s.parent.span_id for s in weight_spans if s.parent} == {step.context.span_id}


def test_unsized_streamed_files_fall_back_to_the_streamers_own_size(tmp_path: Path) -> None:
    """A model that cannot be sized here (a Hub id) streamed by the RunAI streamer: the bytes
    are the size its log line printed."""
    store = InMemoryEventStore()

    class HubStreaming(Recording):
        async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
            config = SimpleNamespace(
                model_config=SimpleNamespace(model="org/model", model_weights=""),
                load_config=SimpleNamespace(load_format="runai_streamer"))
            record_weight_loading(ctx, report, self.loads, config)
            ctx.engine = "engine"

    steps = DefaultSteps(download=SettingStep("download_result", None),
                         placement_group=SettingStep("placement_group", None),
                         engine=HubStreaming(tmp_path, [WeightLoad(
                             "EngineCore", 0.3, 1_800_000_000.0, "streamer_log", 1153434)]))
    asyncio.run(initialize_node(LLMConfig(model_id="org/model"), event_store=store,
                                steps=steps))
    (init_id,) = store.list_init_ids()
    (loaded,) = [e for e in read_events(store, init_id) if isinstance(e, WeightsLoaded)]
    assert (loaded.bytes, loaded.files, loaded.bytes_per_s) == (1153434, 0,
                                                                round(1153434 / 0.3, 1))
