"""The weights' transfer inside a real vLLM engine on the CPU, recorded: the bytes of the files
vLLM loaded from a local directory, or streamed from an S3 bucket (moto) with the RunAI Model
Streamer, with the time vLLM's or the streamer's own log line gave."""

from __future__ import annotations

import asyncio
import gc
import pathlib

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llm_init import InMemoryEventStore, LLMConfig, NodeInitializationContext, initialize_node
from llm_init.events import WeightsLoaded
from llm_init.replay import read_events
from llm_init.steps import ray_vllm_steps
from llm_init.telemetry import names
from tests.e2e.support import LocalDirectoryDownload
from tests.support.s3 import running_moto_s3

pytestmark = [pytest.mark.e2e, pytest.mark.vllm]

ENV = {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1",
       "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
KWARGS = {"dtype": "bfloat16", "enforce_eager": True, "max_model_len": 256, "max_num_seqs": 4,
          "max_num_batched_tokens": 256}


@pytest.fixture(autouse=True)
def fast_start(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


class EngineOnly:
    """No placement group (no Ray here); with ``stream``, no download either: the engine gets
    the bucket URI."""

    def __init__(self, stream: bool = False) -> None:
        self.stream = stream

    def on_pre_download(self, ctx: NodeInitializationContext) -> bool:
        return not self.stream

    def on_pre_placement_group(self, ctx: NodeInitializationContext) -> bool:
        return False


def start(config: LLMConfig, model_dir: pathlib.Path, store: InMemoryEventStore,
          provider: TracerProvider | None = None) -> None:
    steps = ray_vllm_steps(download=LocalDirectoryDownload(str(model_dir)))
    ctx = asyncio.run(initialize_node(config, event_store=store, steps=steps,
                                      tracer_provider=provider))
    ctx.engine.shutdown()
    ctx.engine = None  # no second shutdown from __del__ at interpreter exit
    gc.collect()


def weights_loaded(store: InMemoryEventStore) -> list[WeightsLoaded]:
    (init_id,) = store.list_init_ids()
    return [e for e in read_events(store, init_id) if isinstance(e, WeightsLoaded)]


def safetensors_sizes(model_dir: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))


def test_the_default_load_records_the_safetensors_bytes_and_vllms_time(
        tiny_model: pathlib.Path) -> None:
    """Loading from the downloaded directory records one worker's transfer: the bytes of the
    model's safetensors files, in the time vLLM logged, on a weight_loading span."""
    store, exporter = InMemoryEventStore(), InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    start(LLMConfig(model_id="tiny", engine_kwargs=KWARGS, callback_class=EngineOnly),
          tiny_model, store, provider)
    (loaded,) = weights_loaded(store)
    assert (loaded.bytes, loaded.files, loaded.load_format, loaded.source, loaded.worker) == (
        safetensors_sizes(tiny_model), 1, "auto", "vllm_log", "EngineCore")
    assert loaded.seconds is not None
    assert loaded.seconds > 0
    assert loaded.bytes_per_s == pytest.approx(loaded.bytes / loaded.seconds, rel=1e-3)
    (span,) = [s for s in exporter.get_finished_spans() if s.name == names.SPAN_WEIGHT_LOADING]
    assert span.attributes is not None
    assert span.attributes[names.ATTR_WEIGHT_BYTES] == loaded.bytes
    assert span.parent is not None
    (step,) = [s for s in exporter.get_finished_spans()
               if s.context.span_id == span.parent.span_id]
    assert step.name == f"{names.SPAN_STEP_PREFIX}engine"


def test_streaming_from_the_bucket_records_the_streamed_shard_bytes(
        tiny_model: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With load_format=runai_streamer and an s3:// model, the recorded bytes are the sizes of
    the safetensors objects in the bucket, timed by the streamer's own log line."""
    pytest.importorskip("runai_model_streamer")
    store = InMemoryEventStore()
    with running_moto_s3() as s3:
        uri = s3.upload_dir(tiny_model, "models/tiny")
        monkeypatch.setenv("AWS_ENDPOINT_URL", s3.endpoint_url)
        monkeypatch.setenv("RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING", "0")
        config = LLMConfig(model_id="tiny", model_source=uri,
                           engine_kwargs={**KWARGS, "load_format": "runai_streamer"},
                           callback_class=EngineOnly, callback_kwargs={"stream": True})
        start(config, tiny_model, store)
        listed = s3.client().list_objects_v2(Bucket="models", Prefix="tiny/")["Contents"]
    shards = {o["Key"]: o["Size"] for o in listed if o["Key"].endswith(".safetensors")}
    (loaded,) = weights_loaded(store)
    assert (loaded.bytes, loaded.files, loaded.load_format, loaded.source) == (
        sum(shards.values()), len(shards), "runai_streamer", "streamer_log")
    assert loaded.bytes == safetensors_sizes(tiny_model)
    assert loaded.seconds is not None
    assert loaded.seconds > 0
