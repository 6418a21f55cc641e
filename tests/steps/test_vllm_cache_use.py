"""What vLLM did with its compile cache, read from its log lines: real lines captured from vLLM
0.32's CPU build (``tests/fixtures/vllm_logs``: a cold start, a warm start from the same cache
root, and a start whose hashed ``VLLM_BUILD_URL`` differed so vLLM looked in another cache
directory), and per-range lines written from vLLM's own format strings (its GPU path)."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llm_init.events import ArtifactUseObserved
from llm_init.steps.engine import record_cache_use
from llm_init.steps.vllm_cache_use import (
    AOT_ABSENT,
    AOT_FAILED,
    AOT_LOADED,
    CacheUse,
    parse_cache_use,
)
from llm_init.steps.vllm_startup import EngineStartWatch, LogLine, StartupParser
from llm_init.telemetry import names, spans
from tests.support.vllm_logging import FakeLoggingConfig

FIXTURES = Path(__file__).parents[1] / "fixtures" / "vllm_logs"
CPU_AOT_FAILURE = "'function' object has no attribute 'finalize_loading'"


def captured(name: str) -> CacheUse:
    """The cache use of a captured start, fed as the engine step's watch feeds its parser."""
    parser = StartupParser(0.0)
    for line in (FIXTURES / f"{name}.log").read_text().splitlines():
        process, level, text = line.split(" ", 2)
        parser.feed(LogLine(0.0, level, process, text))
    return parser.cache.result()


def test_a_cpu_warm_start_uses_the_cache_though_its_aot_artifact_fails_to_load() -> None:
    """The CPU build's warm start: the AOT artifact is found but fails to load (the reason is
    vLLM's), the model info comes from the cache, and the recompile counts as a use."""
    use = captured("warm")
    assert (use.aot, use.aot_reason) == (AOT_FAILED, CPU_AOT_FAILURE)
    assert use.model_info_cached is True
    assert use.used


def test_a_cold_start_compiles_with_nothing_to_load() -> None:
    """A cold start finds no AOT artifact, inspects the model and compiles: nothing used."""
    use = captured("cold")
    assert (use.aot, use.compiled, use.model_info_cached) == (AOT_ABSENT, True, False)
    assert not use.used


def test_a_cache_vllm_keys_under_another_setting_is_unused() -> None:
    """With a hashed variable changed, vLLM looks in another directory, finds no artifact and
    compiles: the files in the restored directory were not used."""
    use = captured("ignored")
    assert (use.aot, use.compiled, use.used) == (AOT_ABSENT, True, False)


def test_graphs_loaded_per_compile_range_are_a_use_and_compiled_ones_are_not() -> None:
    """On vLLM's per-range path, graphs loaded from the cache are a use; one range compiled
    again makes it unused, whatever else loaded."""
    loaded = ("Directly load the compiled graph(s) for compile range (1, 8192) from the cache, "
              "took 0.412 s")
    compiled = "Compiling a graph for compile range (1, 8192) takes 21.37 s"
    assert parse_cache_use([loaded]) == CacheUse(graphs_loaded=1)
    assert parse_cache_use([loaded]).used
    assert not parse_cache_use([loaded, compiled]).used
    assert parse_cache_use([loaded, compiled]).graphs_compiled == 1


def test_an_aot_artifact_loaded_is_a_use_and_a_disabled_cache_is_not() -> None:
    """"Directly load AOT compilation" means used; vLLM's compile cache switched off means
    nothing restored can be used."""
    aot = parse_cache_use(["[backbone] Directly load AOT compilation from path /c/rank_0_0/model"])
    assert (aot.aot, aot.used) == (AOT_LOADED, True)
    assert not parse_cache_use(["vLLM's torch.compile cache is disabled."]).used


def test_the_description_says_what_vllm_did() -> None:
    """One line names the counts and vLLM's reason, as the timeline shows them."""
    assert captured("warm").describe() == (
        f"AOT failed: {CPU_AOT_FAILURE}, model compiled, model info cached")
    assert captured("ignored").describe() == (
        "no AOT artifact at vLLM's path, model compiled, model info cached")


CHILD = """
import json, logging, logging.config, sys
logging.config.dictConfig(json.load(open(sys.argv[1])))
logging.getLogger("vllm.model_executor.models.registry").debug(
    "Loaded model info for class m.Llama from cache")
logging.getLogger("vllm.compilation").debug("Start compiling function forward")
"""


def test_the_model_info_cache_debug_record_is_read_from_enginecore_only(tmp_path: Path) -> None:
    """The model-info cache speaks only at DEBUG: the watch reads that record from a child
    process, while vLLM's own handler keeps INFO and prints neither DEBUG record."""
    user_config = tmp_path / "user.json"
    user_config.write_text(json.dumps({"version": 1, "handlers": {"out": {
        "class": "logging.StreamHandler", "stream": "ext://sys.stdout"}},
        "loggers": {"vllm": {"handlers": ["out"], "level": "INFO"}}}))
    vllm_config = SimpleNamespace(logging_config=FakeLoggingConfig(
        pylogging_config_file=str(user_config)))
    printed: list[str] = []

    def engine_core() -> None:
        config = vllm_config.logging_config.pylogging_config_file
        done = subprocess.run([sys.executable, "-c", CHILD, config], capture_output=True,
                              text=True, check=True)
        printed.append(done.stdout)

    async def start() -> CacheUse:
        async with EngineStartWatch(lambda **d: None, poll_s=0.05) as watch:
            assert watch.capture_child_logs(vllm_config)
            await watch.call(engine_core)
        return watch.cache_use

    use = asyncio.run(start())
    assert use.model_info_cached is True
    assert printed == [""]


def test_the_watch_reads_the_model_info_record_of_this_process_and_restores_the_level() -> None:
    """In this process too the DEBUG record is read, and the logger's level is put back."""
    registry = logging.getLogger("vllm.model_executor.models.registry")

    async def start() -> CacheUse:
        async with EngineStartWatch(lambda **d: None, poll_s=0.05) as watch:
            await watch.call(lambda: registry.debug(
                "Cache model info for class m.Llama miss. Loading model instead."))
        return watch.cache_use

    logging.getLogger("vllm").setLevel(logging.INFO)
    assert asyncio.run(start()).model_info_cached is False
    assert not registry.isEnabledFor(logging.DEBUG)


def test_the_engine_steps_span_says_whether_vllm_used_the_restored_cache() -> None:
    """After a restore, the engine step's span carries whether vLLM used the cache and how,
    beside the recorded event."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    watch = EngineStartWatch(lambda **d: None)
    for line in (FIXTURES / "ignored.log").read_text().splitlines():
        process, level, text = line.split(" ", 2)
        watch.parser.feed(LogLine(0.0, level, process, text))
    recorded: list[tuple[type, dict[str, object]]] = []

    class Report:
        def __call__(self, **details: object) -> None: ...

        def record(self, kind: type, /, **fields: object) -> None:
            recorded.append((kind, fields))

    ctx = SimpleNamespace(custom_data={"llm_init.warm_start": {"artifact": "k1",
                                                               "result": "hit"}})
    with spans.start(provider.get_tracer("test"), "llm_init.step.engine", {}):
        record_cache_use(ctx, Report(), watch)  # type: ignore[arg-type]  # stand-ins for the context and reporter
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes[names.ATTR_ARTIFACT_USED] is False
    assert attributes[names.ATTR_ARTIFACT_AOT] == "absent"
    assert [(kind, fields["used"], fields["restored"]) for kind, fields in recorded] == [
        (ArtifactUseObserved, False, True)]
