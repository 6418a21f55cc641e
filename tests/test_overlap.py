"""The overlapped start (``overlap_weights``): the engine phase starts once config and tokenizer
are in place and loads each weight file as it arrives; the hooks keep their meaning; turned off,
or with nothing to overlap, the sequence is today's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from llm_init import (
    DefaultSteps,
    Event,
    InMemoryEventStore,
    LLMConfig,
    StepError,
    initialize_node_sync,
    read_events,
    replay,
)
from llm_init.cli import views
from llm_init.steps.download import DownloadError, DownloadStep
from llm_init.steps.download.checksums import MIB
from tests import recording
from tests.recording import RecordingCallback
from tests.support.logs import PLAIN_RUN
from tests.support.models import write_model
from tests.support.overlap import AnnouncingDownload, LoadingEngineStep
from tests.support.steps import SettingStep

SEQUENTIAL = PLAIN_RUN


@pytest.fixture(autouse=True)
def _clear_calls() -> None:
    recording.CALLS.clear()


def trail(events: list[Event]) -> list[str]:
    """The log without progress reports: type and what each event concerns."""
    out = []
    for e in events:
        if e.TYPE == "StepProgressed":
            continue
        what = (getattr(e, "hook", None) or getattr(e, "step", None) or getattr(e, "field", None)
                or getattr(e, "phase", None) or "")
        out.append(f"{e.TYPE}:{what}" if what and not e.TYPE.startswith("Initialization")
                   else e.TYPE)
    return out


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """Config, tokenizer and three 1 MiB safetensors shards."""
    write_model(tmp_path / "src", shards=3, shard_size=MIB)
    return tmp_path / "src"


def start(model: Path, cache: Path, *, overlap: bool, returns: dict[str, Any] | None = None,
          bandwidth: float = 2 * MIB, store: InMemoryEventStore | None = None,
          engine_kwargs: dict[str, Any] | None = None, artifact_store: str | None = None,
          ) -> tuple[list[Event], LoadingEngineStep]:
    """An initialization copying ``model`` at ``bandwidth`` into ``cache``; its log and engine."""
    engine = LoadingEngineStep()
    steps = DefaultSteps(
        download=DownloadStep(copy_local_source=True, cache_dir=cache, max_bandwidth=bandwidth,
                              progress_interval_s=0.05),
        placement_group=SettingStep("placement_group", {"bundles": [{"CPU": 1}]}),
        engine=engine)
    store = store if store is not None else InMemoryEventStore()
    config = LLMConfig(model_id="tiny", model_source=str(model), overlap_weights=overlap,
                       engine_kwargs=dict(engine_kwargs or {}), artifact_store=artifact_store,
                       callback_class=RecordingCallback, callback_kwargs={"returns": returns or {}})
    ctx = initialize_node_sync(config, event_store=store, steps=steps)
    return read_events(store, ctx.init_id), engine


def test_overlap_off_records_todays_sequence(model: Path, tmp_path: Path) -> None:
    """With ``overlap_weights`` off the log is today's: each phase ends before the next begins,
    and the engine starts from the complete download."""
    events, engine = start(model, tmp_path / "cache", overlap=False)
    assert trail(events) == SEQUENTIAL
    assert engine.seen["overlapped"] is False
    assert engine.seen["download_result"].bytes_total == sum(engine.seen["loaded"].values()) + \
        sum(p.stat().st_size for p in model.iterdir() if p.suffix != ".safetensors")
    assert "load_format" not in engine.seen["kwargs"]


def test_overlapped_start_runs_the_engine_while_the_weights_arrive(model: Path,
                                                                   tmp_path: Path) -> None:
    """The engine phase begins before the download phase ends, loads every shard whole, and
    the record says how many seconds ran side by side."""
    events, engine = start(model, tmp_path / "cache", overlap=True)
    log = trail(events)
    assert log.index("PhaseStarted:engine_init") < log.index("StepCompleted:download")
    assert log.index("StepStarted:engine") < log.index("PhaseCompleted:download")
    assert engine.seen["overlapped"] is True
    assert engine.seen["download_result"] is None  # the download was still running
    assert engine.seen["kwargs"]["load_format"] == "llm_init_overlap"
    assert engine.seen["loaded"] == {p.name: MIB for p in model.glob("*.safetensors")}
    overlapped = [e for e in events if e.TYPE == "DownloadOverlapped"]
    assert len(overlapped) == 1
    assert overlapped[0].overlapped_s > 0.3  # type: ignore[attr-defined]  # a field of the Event subclass read
    assert log[-1] == "InitializationCompleted"


def test_on_post_download_still_fires_when_the_download_is_complete(model: Path,
                                                                     tmp_path: Path) -> None:
    """Every hook fires once; ``on_post_download`` comes after the download step's end, while
    the later phases' hooks have already run."""
    events, _ = start(model, tmp_path / "cache", overlap=True)
    log = trail(events)
    assert sorted(recording.CALLS) == sorted(f"cb.{h}" for h in (
        "on_pre_initialization", "on_pre_download", "on_post_download",
        "on_pre_placement_group", "on_post_placement_group", "on_pre_engine_init",
        "on_post_engine_init", "on_post_initialization"))
    assert log.index("StepCompleted:download") < log.index("HookStarted:on_post_download")
    assert log.index("HookStarted:on_pre_engine_init") < log.index("HookStarted:on_post_download")
    assert log.index("PhaseCompleted:download") < log.index("PhaseStarted:post_initialization")
    assert recording.CALLS[-1] == "cb.on_post_initialization"


def test_the_timeline_draws_both_phases_and_the_seconds_saved(model: Path,
                                                              tmp_path: Path) -> None:
    """``llm-init timeline`` shows the download's and the engine's bars overlapping and prints
    the seconds the overlap saved."""
    events, _ = start(model, tmp_path / "cache", overlap=True)
    r = replay(events)
    phases = {e.name: e for e in r.timeline if e.kind == "phase"}
    download, engine = phases["download"], phases["engine_init"]
    assert engine.started_at < download.started_at + _seconds(download.duration_s)
    console = Console(width=160, record=True)
    console.print(views.timeline_tree(r))
    text = console.export_text()
    assert f"overlap: {views.secs(r.overlapped_s)} saved" in text
    assert views.timeline_dict(r)["overlap"] == {"saved_s": r.overlapped_s}


def test_a_pre_download_returning_false_starts_sequentially(model: Path,
                                                             tmp_path: Path) -> None:
    """A skipped download has nothing to overlap: the phases run one after another."""
    events, engine = start(model, tmp_path / "cache", overlap=True,
                           returns={"on_pre_download": False})
    log = trail(events)
    assert log.index("PhaseCompleted:download") < log.index("PhaseStarted:placement_group")
    assert engine.seen["overlapped"] is False
    assert not [e for e in events if e.TYPE == "DownloadOverlapped"]


def test_a_download_already_in_place_starts_sequentially(model: Path, tmp_path: Path) -> None:
    """The second start from a full cache has no weights to wait for: today's sequence."""
    start(model, tmp_path / "cache", overlap=True)
    recording.CALLS.clear()
    events, engine = start(model, tmp_path / "cache", overlap=True)
    assert trail(events) == SEQUENTIAL
    assert engine.seen["overlapped"] is False


def test_a_load_format_that_cannot_wait_starts_sequentially_and_says_why(
        model: Path, tmp_path: Path) -> None:
    """Another loader's format cannot take files as they arrive: today's sequence, with the
    reason in the download step's record."""
    events, _ = start(model, tmp_path / "cache", overlap=True,
                      engine_kwargs={"load_format": "dummy"})
    assert trail(events) == SEQUENTIAL
    reasons = [e.details["overlap"] for e in events  # type: ignore[attr-defined]  # a field of the Event subclass read
               if e.TYPE == "StepProgressed" and "overlap" in e.details]  # type: ignore[attr-defined]  # a field of the Event subclass read
    assert reasons == ["sequential: load_format=dummy cannot wait for files"]


def test_warm_starts_keep_the_sequential_start(model: Path, tmp_path: Path) -> None:
    """With ``artifact_store`` the restore needs the downloaded weights before the engine
    starts: the engine starts after the download phase, and the record says why."""
    events, engine = start(model, tmp_path / "cache", overlap=True,
                           artifact_store=(tmp_path / "artifacts").as_uri())
    log = trail(events)
    assert log.index("PhaseCompleted:download") < log.index("PhaseStarted:engine_init")
    assert engine.seen["overlapped"] is False
    reasons = [e.details["overlap"] for e in events  # type: ignore[attr-defined]  # a field of the Event subclass read
               if e.TYPE == "StepProgressed" and "overlap" in e.details]  # type: ignore[attr-defined]  # a field of the Event subclass read
    assert reasons == ["sequential: warm starts (artifact_store) restore the compile cache by "
                       "a key of the downloaded weights, before the engine starts"]


def test_vllm_plugins_leaving_out_llm_inits_loader_starts_sequentially(
        model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where vLLM would not load llm-init's plugin, the engine is not pointed at its loader."""
    monkeypatch.setenv("VLLM_PLUGINS", "llm_init_amx")
    events, engine = start(model, tmp_path / "cache", overlap=True)
    assert trail(events) == SEQUENTIAL
    assert engine.seen["overlapped"] is False


def test_a_corrupt_shard_fails_the_overlapped_start_naming_it(model: Path,
                                                              tmp_path: Path) -> None:
    """A shard cut short fails the start with an error naming it; the engine loaded nothing."""
    shard = model / "model-00003-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[: MIB // 2])
    store = InMemoryEventStore()
    with pytest.raises(StepError, match=r"model-00003-of-00003\.safetensors") as caught:
        start(model, tmp_path / "cache", overlap=True, store=store)
    assert "truncated" in str(caught.value)
    init_id = store.list_init_ids(1)[0]
    events = read_events(store, init_id)
    failed = [e for e in events if e.TYPE == "InitializationFailed"]
    assert failed[0].phase == "download"  # type: ignore[attr-defined]  # a field of the Event subclass read
    assert "model-00003-of-00003.safetensors" in failed[0].message  # type: ignore[attr-defined]  # a field of the Event subclass read
    assert "ContextChanged:engine" not in trail(events)
    assert "StepStarted:engine" in trail(events)  # it had started, and was stopped


def _seconds(value: float | None) -> Any:
    from datetime import timedelta

    return timedelta(seconds=value or 0.0)


def test_a_download_failing_after_the_engine_ended_fails_the_start_as_the_downloads(
        tmp_path: Path) -> None:
    """An engine step that does not wait for the weights ends first; the download's later
    failure still fails the initialization, reported as the download phase's."""
    store = InMemoryEventStore()
    steps = DefaultSteps(
        download=AnnouncingDownload(str(tmp_path), error=DownloadError("shard-7 was cut short")),
        placement_group=SettingStep("placement_group", {"bundles": []}),
        engine=SettingStep("engine", "engine-handle"))
    config = LLMConfig(model_id="tiny", overlap_weights=True)
    with pytest.raises(StepError, match="shard-7 was cut short"):
        initialize_node_sync(config, event_store=store, steps=steps)
    events = read_events(store, store.list_init_ids(1)[0])
    log = trail(events)
    assert log.index("StepCompleted:engine") < log.index("StepFailed:download")
    assert events[-1].TYPE == "InitializationFailed"
    assert events[-1].phase == "download"  # type: ignore[attr-defined]  # a field of the Event subclass read
    assert "PhaseStarted:post_initialization" not in log
