"""What a warm start leaves on record: replay, the timeline, ``diff`` and the metrics."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from llm_init import SQLiteEventStore
from llm_init.artifacts import open_artifact_store, publish
from llm_init.artifacts.key import make_key
from llm_init.artifacts.transfer import manifest_name
from llm_init.cli import app
from llm_init.context import NodeInitializationContext
from llm_init.events import ArtifactMissed, ArtifactUseObserved, Event
from llm_init.fleet.diff import diff_initializations
from llm_init.replay import replay
from llm_init.steps.base import ProgressReporter
from llm_init.steps.engine import record_cache_use
from llm_init.steps.vllm_startup import EngineStartWatch
from llm_init.stores import decode, encode
from llm_init.telemetry import names
from llm_init.telemetry.backends import PrometheusBackend
from llm_init.telemetry.metrics import MetricsCallback
from tests.support.warm import CachingEngineStep, of_type, start

VLLM_LOGS = Path(__file__).parents[1] / "fixtures" / "vllm_logs"


def cold_and_warm(tmp_path: Path, observers: list[object] | None = None,
                  ) -> tuple[list[Event], list[Event]]:
    engine, url = CachingEngineStep(), f"file://{tmp_path / 'store'}"
    _, cold = start(tmp_path, "node-a", url, engine, observers=observers)
    _, warm = start(tmp_path, "node-b", url, engine, observers=observers)
    return cold, warm


def test_replay_says_hit_or_miss_and_what_was_published(tmp_path: Path) -> None:
    """The replayed cold start missed and published; the warm start hit."""
    cold, warm = cold_and_warm(tmp_path)
    assert replay(cold).warm_start["result"] == "miss"
    assert replay(cold).warm_start["reason"] == "no_match"
    assert replay(cold).warm_start["published"]["result"] == "published"
    assert replay(warm).warm_start["result"] == "hit"


def test_the_timeline_marks_hit_and_miss_and_diff_shows_the_compile_saved(
        tmp_path: Path) -> None:
    """``timeline`` prints HIT or MISS with its reason; ``diff`` lists vLLM's sub-phases."""
    cold, warm = cold_and_warm(tmp_path)
    db = tmp_path / "events.sqlite"
    store = SQLiteEventStore(db)
    store.append([encode(e) for e in [*cold, *warm]])
    store.close()
    runner = CliRunner()
    out_cold = runner.invoke(app, ["timeline", cold[0].init_id, "--store", str(db)],
                             env={"COLUMNS": "200"}).output
    out_warm = runner.invoke(app, ["timeline", warm[0].init_id, "--store", str(db)],
                             env={"COLUMNS": "200"}).output
    assert "warm start: MISS (no_match)" in out_cold
    assert "warm start: HIT" in out_warm
    rows = {(t.kind, t.name): (t.a_s, t.b_s) for t in diff_initializations(cold, warm).times}
    assert rows[("subphase", "torch_compile")] == (9.0, 1.0)


def test_after_an_upgrade_the_timeline_names_the_version_the_stored_artifact_was_made_with(
        tmp_path: Path) -> None:
    """The store holds this model's artifact from another vLLM: the next start is a version
    mismatch, and its timeline says which version the artifact was made with."""
    engine, url = CachingEngineStep(), f"file://{tmp_path / 'store'}"
    _, cold = start(tmp_path, "node-a", url, engine)
    (cold_miss,) = of_type(cold, ArtifactMissed)
    store = open_artifact_store(url)
    older = make_key({**cold_miss.parts, "vllm": "0.9.0"})
    (tmp_path / "older").mkdir()
    (tmp_path / "older" / "compiled.so").write_bytes(b"old")
    publish(store, older.digest, older.parts, tmp_path / "older")
    store.delete(manifest_name(cold_miss.key))  # only the older vLLM's artifact is left
    _, upgraded = start(tmp_path, "node-b", url, engine, publish=False)
    (missed,) = of_type(upgraded, ArtifactMissed)
    db = tmp_path / "events.sqlite"
    log = SQLiteEventStore(db)
    log.append([encode(e) for e in upgraded])
    log.close()
    out = CliRunner().invoke(app, ["timeline", upgraded[0].init_id, "--store", str(db)],
                             env={"COLUMNS": "200"}).output
    assert (missed.reason, missed.nearest) == ("version_mismatch", older.digest)
    assert "warm start: MISS (version_mismatch)" in out
    assert f"vllm 0.9.0 -> {cold_miss.parts['vllm']}" in out


def test_metrics_count_hits_misses_and_bytes_by_direction(tmp_path: Path) -> None:
    """One miss and one hit are counted, and bytes restored and published by direction."""
    registry = CollectorRegistry()
    metrics = MetricsCallback(PrometheusBackend(registry, port=None))
    cold_and_warm(tmp_path, observers=[metrics])

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"model": "tiny", **labels})

    assert value(names.METRIC_ARTIFACT_CACHE, result="hit") == 1.0
    assert value(names.METRIC_ARTIFACT_CACHE, result="miss") == 1.0
    assert value(names.METRIC_ARTIFACT_BYTES, direction="restore") == len("compiled\n")
    assert (value(names.METRIC_ARTIFACT_BYTES, direction="publish") or 0) > 0
    assert value(f"{names.METRIC_ARTIFACT_SECONDS}_count", direction="publish") == 1.0


class LoggingEngineStep(CachingEngineStep):
    """Caches as ``CachingEngineStep`` does while vLLM's loggers say, with the lines of a
    captured vLLM start (``warm``: used; ``ignored``: compiled anyway), what vLLM did; the
    engine step's watch reads them and records the cache use as the real step does."""

    def __init__(self, capture: str) -> None:
        super().__init__()
        self.capture = capture

    def vllm_logs(self) -> None:
        vllm = logging.getLogger("vllm")
        level_before = vllm.level
        vllm.setLevel(logging.INFO)  # as vLLM configures its logger
        try:
            for line in (VLLM_LOGS / f"{self.capture}.log").read_text().splitlines():
                _, level, text = line.split(" ", 2)
                logger = logging.getLogger("vllm.model_executor.models.registry"
                                           if level == "DEBUG" else "vllm.compilation")
                logger.log(logging.getLevelName(level), "%s", text)
        finally:
            vllm.setLevel(level_before)

    async def run(self, ctx: NodeInitializationContext, report: ProgressReporter) -> None:
        async with EngineStartWatch(report, poll_s=0.05) as watch:
            await watch.call(self.vllm_logs)
        await super().run(ctx, report)
        record_cache_use(ctx, report, watch)


def restored_then(tmp_path: Path, capture: str, observers: list[object] | None = None,
                  ) -> tuple[list[Event], list[Event]]:
    """A cold start that publishes, then a start that restores it while vLLM logs ``capture``."""
    url = f"file://{tmp_path / 'store'}"
    _, cold = start(tmp_path, "node-a", url, CachingEngineStep(), observers=observers)
    _, warm = start(tmp_path, "node-b", url, LoggingEngineStep(capture), observers=observers)
    return cold, warm


def timeline(tmp_path: Path, events: list[Event]) -> str:
    db = tmp_path / "events.sqlite"
    store = SQLiteEventStore(db)
    store.append([encode(e) for e in events])
    store.close()
    return CliRunner().invoke(app, ["timeline", events[0].init_id, "--store", str(db)],
                              env={"COLUMNS": "250"}).output


def test_a_restore_vllm_used_is_recorded_as_used_with_what_vllm_did(tmp_path: Path) -> None:
    """After a restore, the engine step records that vLLM used it (the CPU build: its AOT
    artifact failed to load, with vLLM's reason), and the timeline says so."""
    _, warm = restored_then(tmp_path, "warm")
    (observed,) = of_type(warm, ArtifactUseObserved)
    assert (observed.restored, observed.used, observed.aot) == (True, True, "failed")
    assert observed.aot_reason == "'function' object has no attribute 'finalize_loading'"
    assert observed.model_info_cached is True
    out = timeline(tmp_path, warm)
    assert "warm start: HIT" in out
    assert "used by vLLM (AOT failed: 'function' object has no attribute" in out


def test_a_restore_vllm_ignored_is_a_hit_unused_in_the_timeline_and_diff(
        tmp_path: Path) -> None:
    """A restored artifact that vLLM did not use (it compiled afresh) is recorded as unused,
    the timeline shows the hit as unused and why, and ``diff`` against a used one shows it."""
    _, ignored = restored_then(tmp_path / "a", "ignored")
    _, used = restored_then(tmp_path / "b", "warm")
    (observed,) = of_type(ignored, ArtifactUseObserved)
    assert (observed.restored, observed.used, observed.compiled) == (True, False, True)
    assert "warm start: HIT, unused by vLLM (no AOT artifact at vLLM's path, model compiled" \
        in timeline(tmp_path / "a", ignored)
    values = {(v.section, v.path): (v.a, v.b)
              for v in diff_initializations(ignored, used).values}
    assert values[("warm_start", "used")] == (False, True)
    assert values[("warm_start", "vllm.aot")] == ("absent", "failed")


def test_metrics_count_a_restore_vllm_ignored_as_unused(tmp_path: Path) -> None:
    """The hit that vLLM ignored is counted as ``result="unused"`` too; a used one is not."""
    registry = CollectorRegistry()
    metrics = MetricsCallback(PrometheusBackend(registry, port=None))
    restored_then(tmp_path / "a", "ignored", observers=[metrics])
    restored_then(tmp_path / "b", "warm", observers=[metrics])

    def value(result: str) -> float | None:
        return registry.get_sample_value(names.METRIC_ARTIFACT_CACHE,
                                         {"model": "tiny", "result": result})

    assert (value("hit"), value("miss"), value(names.RESULT_UNUSED)) == (2.0, 2.0, 1.0)


def test_a_log_without_cache_use_fields_still_decodes(tmp_path: Path) -> None:
    """An ``ArtifactUseObserved`` stored with only its required fields decodes, the
    optional ones defaulted, so logs of earlier writers stay readable."""
    _, warm = restored_then(tmp_path, "warm")
    (observed,) = of_type(warm, ArtifactUseObserved)
    stored = encode(observed)
    optional = ("restored", "aot", "aot_reason", "graphs_loaded", "graphs_compiled",
                "compiled", "model_info_cached", "cache_disabled", "node")
    body = {k: v for k, v in json.loads(stored.state).items() if k not in optional}
    old = decode(dataclasses.replace(stored, state=json.dumps(body)))
    assert isinstance(old, ArtifactUseObserved)
    assert (old.used, old.aot, old.graphs_compiled, old.model_info_cached) == (
        True, "absent", 0, None)
