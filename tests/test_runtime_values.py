"""Values that break the log: NaN and the infinities are recorded as text, and an event the
encoder or the store refuses for good fails the initialization on the record, never silently."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from llm_init import (
    CallbackError,
    Event,
    EventRejected,
    EventRejectedError,
    LLMConfig,
    NodeInitializationContext,
    PhaseStarted,
    initialize_node_sync,
    read_events,
    replay,
)
from llm_init.errors import EventStoreUnavailableError
from llm_init.recorder import EventRecorder
from llm_init.stores import BufferedEventStore, SQLiteEventStore, encode, open_store
from tests.support.postgres_roles import read_only_role
from tests.support.steps import CallingStep, local_steps

NAN, INF = float("nan"), float("inf")


class NonFiniteCallback:
    """Puts NaN and the infinities everywhere a hook can: custom_data, extra_init_kwargs, its
    return value."""

    def on_pre_download(self, ctx: NodeInitializationContext) -> Any:
        ctx.custom_data["loss"] = NAN
        ctx.custom_data["bounds"] = [-INF, INF]
        ctx.extra_init_kwargs["temperature"] = INF
        return -INF


class NonFiniteStep:
    """A download step reporting NaN progress, as a step dividing by a zero duration would."""

    async def run(self, ctx: NodeInitializationContext, report: Any) -> None:
        report(rate=NAN, eta_s=INF)
        ctx.download_result = {"path": "/models/tiny", "throughput": NAN}


class HugeIntCallback:
    """Stores an int with more digits than Python will turn into text (and so into JSON)."""

    def on_post_download(self, ctx: NodeInitializationContext) -> None:
        ctx.custom_data["seed"] = 10 ** 5000


def fresh_events(location: str, init_id: str) -> list[Event]:
    """The log as another process (the CLI) reads it: through a newly opened store."""
    reader = open_store(location, create=False)
    try:
        return read_events(reader, init_id)
    finally:
        reader.close()


@pytest.fixture(autouse=True)
def _spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_INIT_SPOOL_DIR", str(tmp_path / "spool"))


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "events.sqlite")
    url: str = request.getfixturevalue("postgres_url")
    return url


def test_non_finite_values_are_recorded_as_text_and_the_init_completes(location: str) -> None:
    """NaN, Infinity and -Infinity from a hook and a step are stored as those strings, and the
    whole initialization is recorded and completes."""
    store = open_store(location)
    try:
        ctx = initialize_node_sync(LLMConfig(model_id="m", callback_class=NonFiniteCallback),
                                   event_store=store,
                                   steps=local_steps(download=NonFiniteStep()))
    finally:
        store.close()
    events = fresh_events(location, ctx.init_id)
    state = replay(events)
    assert state.outcome == "completed"
    assert state.state["custom_data"] == {"loss": "NaN", "bounds": ["-Infinity", "Infinity"]}
    assert state.state["extra_init_kwargs"] == {"temperature": "Infinity"}
    assert state.state["download_result"] == {"path": "/models/tiny", "throughput": "NaN"}
    assert state.progress == {"rate": "NaN", "eta_s": "Infinity"}
    returned = [e.returned for e in events if e.TYPE == "HookCompleted"]  # type: ignore[attr-defined]  # a field of the Event subclass read
    assert returned == ["-Infinity"]


@pytest.mark.parametrize("traced", [False, True], ids=["untraced", "traced"])
def test_a_value_the_encoder_refuses_fails_the_init_naming_hook_and_field(
        tmp_path: Path, traced: bool) -> None:
    """An event JSON cannot hold is replaced by EventRejected naming callback, hook and field;
    the rest is recorded and the initialization ends failed, with or without spans."""
    path = tmp_path / "events.sqlite"
    store = SQLiteEventStore(path)
    with pytest.raises(EventRejectedError) as raised:
        initialize_node_sync(LLMConfig(model_id="m", callback_class=HugeIntCallback),
                             event_store=store, steps=local_steps(), init_id="huge",
                             tracer_provider=TracerProvider() if traced else None)
    store.close()
    name = "tests.test_runtime_values.HugeIntCallback"
    assert f"callback {name}" in str(raised.value)
    assert "hook on_post_download" in str(raised.value)
    assert "field custom_data['seed']" in str(raised.value)
    events = fresh_events(str(path), "huge")
    [rejected] = [e for e in events if isinstance(e, EventRejected)]
    assert (rejected.rejected_type, rejected.callback, rejected.hook, rejected.field) == (
        "ContextChanged", name, "on_post_download", "custom_data['seed']")
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[-1].TYPE == "InitializationFailed"
    assert events[-1].error_type == "EventRejectedError"  # type: ignore[attr-defined]  # a field of the Event subclass read
    after = [e.TYPE for e in events if e.sequence > rejected.sequence]
    assert after[0] == "HookCompleted"  # what came after the refused event is recorded
    assert replay(events).outcome == "failed"


def test_a_nul_in_a_label_or_model_id_is_recorded_on_postgres(postgres_url: str) -> None:
    """A NUL character, which PostgreSQL text refuses, is no reason to lose an
    initialization: it is recorded, read back as it was, and the init completes."""
    store = open_store(postgres_url)
    try:
        initialize_node_sync(LLMConfig(model_id="m\x00odel"), event_store=store,
                             steps=local_steps(), init_id="nul", labels={"team": "ml\x00ops"})
    finally:
        store.close()
    state = replay(fresh_events(postgres_url, "nul"))
    assert (state.outcome, state.labels) == ("completed", {"team": "ml\x00ops"})


def test_a_store_refusing_every_write_fails_the_init_at_once_instead_of_spooling(
        postgres_url: str) -> None:
    """A database that answers but refuses the writes (INSERT revoked) is not waited out in
    the spool: the initialization fails at once with the store's reason."""
    with read_only_role(postgres_url) as reader_url:
        store = open_store(reader_url)
        assert isinstance(store, BufferedEventStore)
        try:
            with pytest.raises(EventRejectedError, match="permission denied"):
                initialize_node_sync(LLMConfig(model_id="m"), event_store=store,
                                     steps=local_steps(), init_id="denied")
            assert not store._offline
            assert store.buffered == 0
        finally:
            store.close()


def test_config_json_cannot_hold_fails_the_init_with_a_log_that_still_starts(
        tmp_path: Path) -> None:
    """An InitializationStarted the encoder refuses (a 5,000-digit int in engine_kwargs) is
    stored without its config, so the log still starts, and ends failed naming the field."""
    path = tmp_path / "events.sqlite"
    store = SQLiteEventStore(path)
    with pytest.raises(EventRejectedError, match="field config"):
        initialize_node_sync(LLMConfig(model_id="m", engine_kwargs={"seed": 10 ** 5000}),
                             event_store=store, steps=local_steps(), init_id="bigconfig")
    store.close()
    events = fresh_events(str(path), "bigconfig")
    assert [e.TYPE for e in events] == ["InitializationStarted", "InitializationFailed"]
    assert replay(events).outcome == "failed"


def test_a_sequence_number_taken_by_another_writer_fails_the_init_without_retrying(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """When another writer took the next sequence number of this init, its event is left as
    it is, nothing is retried, and the initialization fails naming the refused event."""
    monkeypatch.setenv("LLM_INIT_EVENT_FLUSH_INTERVAL_S", "0")
    path = tmp_path / "events.sqlite"

    async def intruder(ctx: NodeInitializationContext) -> None:
        other = SQLiteEventStore(path)
        taken = other.read(ctx.init_id)[-1].sequence + 1
        other.append([encode(PhaseStarted(init_id=ctx.init_id, sequence=taken,
                                          timestamp=datetime.now(UTC), phase="intruder"))])
        other.close()

    store = SQLiteEventStore(path)
    with pytest.raises(EventRejectedError, match="refused StepCompleted #6 of twice"):
        initialize_node_sync(LLMConfig(model_id="m"), event_store=store, init_id="twice",
                             steps=local_steps(download=CallingStep(intruder)))
    store.close()
    events = fresh_events(str(path), "twice")
    assert [e.TYPE for e in events][-2:] == ["StepStarted", "PhaseStarted"]
    assert events[-1].phase == "intruder"  # type: ignore[attr-defined]  # a field of the Event subclass read


class CyclicCallback:
    """Leaves a dict that contains itself in custom_data."""

    def on_pre_download(self, ctx: NodeInitializationContext) -> None:
        loop: dict[str, Any] = {}
        loop["self"] = loop
        ctx.custom_data["loop"] = loop


def test_a_value_that_cannot_be_summarized_fails_its_hook_naming_the_field(
        tmp_path: Path) -> None:
    """A hook leaving a value no summary can hold (a dict containing itself) fails with a
    HookFailed naming the field; its phase and the initialization are recorded as failed."""
    path = tmp_path / "events.sqlite"
    store = SQLiteEventStore(path)
    with pytest.raises(CallbackError, match=r"on_pre_download: .*ctx\.custom_data"):
        initialize_node_sync(LLMConfig(model_id="m", callback_class=CyclicCallback),
                             event_store=store, steps=local_steps(), init_id="cycle")
    store.close()
    events = fresh_events(str(path), "cycle")
    assert [e.TYPE for e in events][-3:] == ["HookFailed", "PhaseFailed", "InitializationFailed"]
    hook_failed = events[-3]
    assert hook_failed.callback == "tests.test_runtime_values.CyclicCallback"  # type: ignore[attr-defined]  # a field of the Event subclass read
    assert "ctx.custom_data holds a value that cannot be recorded" in (
        hook_failed.message)  # type: ignore[attr-defined]  # a field of the Event subclass read


def test_a_sqlite_store_busy_past_its_timeout_keeps_the_events_for_the_next_commit(
        tmp_path: Path) -> None:
    """Busy is not a refusal: events met by a lock held past the timeout stay pending and are
    all stored, in order, by the next commit once the lock is gone."""
    path = tmp_path / "events.sqlite"
    store = SQLiteEventStore(path, busy_timeout_s=0.05)
    recorder = EventRecorder("busy", store)
    recorder.record(PhaseStarted, phase="download")
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(EventStoreUnavailableError):
        recorder.record(PhaseStarted, phase="placement_group")
    holder.execute("ROLLBACK")
    holder.close()
    recorder.record(PhaseStarted, phase="engine_init")
    store.close()
    phases = [e.phase for e in fresh_events(str(path), "busy")]  # type: ignore[attr-defined]  # a field of the Event subclass read
    assert phases == ["download", "placement_group", "engine_init"]
