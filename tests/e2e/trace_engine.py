"""Run by test_engine_traces in a process of its own: the engine step under an OTLP/HTTP
exporting tracer provider (one per process, hence the separate process).

    python -m tests.e2e.trace_engine MODEL_DIR OTLP_TRACES_URL
"""

from __future__ import annotations

import asyncio
import sys
import time

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from llm_init import InMemoryEventStore, LLMConfig, initialize_node
from llm_init.steps import ray_vllm_steps
from tests.e2e.support import LocalDirectoryDownload
from tests.e2e.test_engine_step import FAST_KWARGS, NoPlacementGroup


def main(model_dir: str, url: str) -> None:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    trace.set_tracer_provider(provider)
    config = LLMConfig(model_id="tiny", engine_kwargs=FAST_KWARGS,
                       callback_class=NoPlacementGroup)
    steps = ray_vllm_steps(download=LocalDirectoryDownload(model_dir))
    ctx = asyncio.run(initialize_node(config, event_store=InMemoryEventStore(), steps=steps))
    time.sleep(1.0)  # EngineCore's batch exporter runs every OTEL_BSP_SCHEDULE_DELAY ms
    ctx.engine.shutdown()
    provider.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
