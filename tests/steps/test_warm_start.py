"""The warm-start restore as a default step: its state travels in the context, the engine gets
vLLM's cache directory from that record, and its spans go to the initialization's tracer."""

from __future__ import annotations

import os
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llm_init import (
    ArtifactError,
    DefaultSteps,
    InMemoryEventStore,
    LLMConfig,
    LLMInitError,
    initialize_node_sync,
)
from llm_init.artifacts import ArtifactStoreError, CorruptArtifactError, UntrustedArtifactError
from llm_init.artifacts.manifest import ManifestVersionError
from llm_init.artifacts.publishing import start_publish
from llm_init.artifacts.transfer import HIT, UNTRUSTED, MissReason, RestoreResult
from llm_init.events import ArtifactPublished, ContextChanged
from llm_init.replay import read_events
from llm_init.steps.download import DownloadStep
from llm_init.steps.warm_start import CONTEXT_KEY, capture_plan
from llm_init.telemetry import names
from tests.support.models import write_model
from tests.support.steps import SettingStep
from tests.support.warm import CachingEngineStep, start


def test_the_engine_gets_the_recorded_cache_dir_and_the_environment_is_left_as_it_was(
        tmp_path: Path) -> None:
    """vLLM's cache directory is the one the restore recorded on the context; it is set for
    the engine's start only, so the process's environment afterwards is what it was."""
    os.environ.pop("VLLM_CACHE_ROOT", None)
    engine = CachingEngineStep()
    ctx, events = start(tmp_path, "node-a", f"file://{tmp_path / 'store'}", engine,
                        publish=False)
    recorded = ctx.custom_data[CONTEXT_KEY]["cache_dir"]
    assert engine.seen[0]["root"] == Path(recorded)
    change, = [e for e in events if isinstance(e, ContextChanged) and e.key == CONTEXT_KEY]
    assert change.new["cache_dir"] == recorded
    assert "VLLM_CACHE_ROOT" not in os.environ


def test_publishing_reads_its_plan_from_the_context(tmp_path: Path) -> None:
    """What to publish (key, parts, cache directory) comes from the context the restore
    recorded, so a context without that record publishes nothing and one with it publishes
    its cache."""
    store = InMemoryEventStore()
    ctx, _ = start(tmp_path, "node-a", f"file://{tmp_path / 'store'}", CachingEngineStep(),
                   publish=False, event_store=store)
    plan = capture_plan(ctx)
    assert plan is not None
    assert (plan.key.digest, plan.cache_root) == (ctx.custom_data[CONTEXT_KEY]["artifact"],
                                                  ctx.custom_data[CONTEXT_KEY]["cache_dir"])
    thread = start_publish(ctx, event_store=store)
    assert thread is not None
    thread.join(60)
    published, = [e for e in read_events(store, ctx.init_id) if isinstance(e, ArtifactPublished)]
    assert published.key == plan.key.digest
    ctx.custom_data.pop(CONTEXT_KEY)
    assert capture_plan(ctx) is None
    assert start_publish(ctx, event_store=store) is None


def test_the_restore_span_goes_to_the_tracer_provider_the_initialization_was_given(
        tmp_path: Path) -> None:
    """With a ``tracer_provider`` passed to ``initialize_node``, the restore's span is among
    that provider's spans, in the initialization's trace."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    write_model(tmp_path / "model", shards=1, shard_size=50_000)
    config = LLMConfig(model_id="tiny", model_source=str(tmp_path / "model"),
                       artifact_store={"url": f"file://{tmp_path / 'store'}",
                                       "cache_dir": str(tmp_path / "warm"),
                                       "model_link_dir": None})
    steps = DefaultSteps(download=DownloadStep(cache_dir=tmp_path / "models"),
                         placement_group=SettingStep("placement_group", None),
                         engine=CachingEngineStep())
    initialize_node_sync(config, event_store=InMemoryEventStore(), steps=steps,
                         tracer_provider=provider)
    finished = exporter.get_finished_spans()
    restore, = [s for s in finished if s.name == names.SPAN_ARTIFACT_RESTORE]
    root, = [s for s in finished if s.name == names.SPAN_INITIALIZE]
    assert restore.context.trace_id == root.context.trace_id


def test_outcomes_are_enums_that_read_as_the_strings_they_always_were() -> None:
    """Results and reasons are ``StrEnum`` members, equal to (and recorded as) the strings
    that events, metrics and dashboards already use."""
    assert RestoreResult("hit") is HIT
    assert MissReason("untrusted") is UNTRUSTED
    assert (HIT, f"{UNTRUSTED}") == ("hit", "untrusted")


def test_artifact_errors_are_llm_init_errors() -> None:
    """Every error of the artifacts package derives from ``ArtifactError``, and so from the
    project's root error."""
    for error in (ArtifactStoreError, CorruptArtifactError, ManifestVersionError,
                  UntrustedArtifactError):
        assert issubclass(error, ArtifactError)
    assert issubclass(ArtifactError, LLMInitError)
