"""What a warm start leaves on record: replay, the timeline, ``diff`` and the metrics."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from llm_init import SQLiteEventStore
from llm_init.artifacts import open_artifact_store, publish
from llm_init.artifacts.key import make_key
from llm_init.artifacts.transfer import manifest_name
from llm_init.cli import app
from llm_init.events import ArtifactMissed, Event
from llm_init.fleet.diff import diff_initializations
from llm_init.replay import replay
from llm_init.stores import encode
from llm_init.telemetry import names
from llm_init.telemetry.backends import PrometheusBackend
from llm_init.telemetry.metrics import MetricsCallback
from tests.artifacts.test_warm_start import CachingEngineStep, of_type, start


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
