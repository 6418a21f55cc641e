"""A replica's PostgreSQL store when the database goes away: the init goes on, its events wait
on local disk and arrive exactly once, in order, when the database is back."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llm_init import Event, LLMConfig, initialize_node_sync
from llm_init.stores import BufferedEventStore, StoredEvent, decode, open_store
from llm_init.stores.buffered import _line
from llm_init.stores.postgres import PostgresEventStore
from tests.support.buffered import buffered, orphan_spool, stored, wait_flushed
from tests.support.callbacks import Busy
from tests.support.logs import records, synthetic_log
from tests.support.postgres import StoppablePostgres
from tests.support.steps import SettingStep, setting_steps

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def spool_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLM_INIT_SPOOL_DIR", str(tmp_path / "spool"))
    return tmp_path / "spool"


@dataclass
class Collector:
    """An observer keeping every event the recorder committed."""

    events: list[Event] = field(default_factory=list)

    def on_event(self, event: Event) -> None:
        self.events.append(event)


@dataclass
class ServerStep:
    """A default step that stops or starts the database, then does the step's real work."""

    server: StoppablePostgres
    action: str
    inner: Any

    async def run(self, ctx: Any, report: Any) -> None:
        getattr(self.server, self.action)()
        await self.inner.run(ctx, report)


def test_appends_while_the_database_is_down_arrive_in_order_once_back(
        own_postgres: StoppablePostgres) -> None:
    """Appends during an outage raise nothing, and all records are stored in order after it."""
    store = buffered(own_postgres.url())
    log = records(synthetic_log("x"))
    store.append(log[:3])
    own_postgres.stop()
    for record in log[3:]:
        store.append([record])
    own_postgres.start()
    wait_flushed(store)
    assert stored(own_postgres.url(), "x") == log


def test_an_init_completes_across_a_database_restart_and_every_event_arrives_once(
        own_postgres: StoppablePostgres, caplog: pytest.LogCaptureFixture) -> None:
    """The download step stops PostgreSQL and the engine step starts it again: the init
    completes, and the stored log is exactly the recorded events, in order."""
    steps = setting_steps()
    steps = type(steps)(download=ServerStep(own_postgres, "stop", steps.download),
                        placement_group=steps.placement_group,
                        engine=ServerStep(own_postgres, "start", steps.engine))
    store, seen = buffered(own_postgres.url()), Collector()
    with caplog.at_level(logging.WARNING, logger="llm_init.stores.buffered"):
        ctx = initialize_node_sync(LLMConfig(model_id="m", callback_class=Busy),
                                   event_store=store, steps=steps, observers=[seen])
        wait_flushed(store)
    assert any("buffering events" in r.getMessage() for r in caplog.records)
    assert [decode(r) for r in stored(own_postgres.url(), ctx.init_id)] == seen.events


def test_a_replica_starts_while_the_database_is_down(own_postgres: StoppablePostgres) -> None:
    """Opening the store and running a whole init with the database stopped succeeds; the
    log is complete once the database starts."""
    own_postgres.stop()
    store, seen = buffered(own_postgres.url()), Collector()
    ctx = initialize_node_sync(LLMConfig(model_id="m"), event_store=store, steps=setting_steps(),
                               observers=[seen])
    own_postgres.start()
    wait_flushed(store)
    assert [decode(r) for r in stored(own_postgres.url(), ctx.init_id)] == seen.events


def test_a_full_spool_drops_and_counts_but_never_fails_the_init(
        own_postgres: StoppablePostgres) -> None:
    """Beyond ``max_bytes`` events are dropped and counted; the init still completes."""
    own_postgres.stop()
    inner = PostgresEventStore(own_postgres.url(), connect=False)
    store = BufferedEventStore(inner, target="full", max_bytes=2000)
    ctx = initialize_node_sync(LLMConfig(model_id="m"), event_store=store, steps=setting_steps())
    assert ctx.engine == "engine-handle"
    assert store.dropped > 0


def test_a_spool_left_by_a_killed_process_is_flushed_by_the_next(
        own_postgres: StoppablePostgres) -> None:
    """A writer killed with -9 during an outage leaves its spool; the next store opened on the
    same spool directory flushes it."""
    own_postgres.stop()
    proc = subprocess.Popen([sys.executable, "-m", "tests.stores.spool_writer",
                             own_postgres.url()], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "spooled"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    own_postgres.start()
    store = buffered(own_postgres.url())
    wait_flushed(store)
    assert stored(own_postgres.url(), "killed") == records(synthetic_log("killed"))


def test_events_already_stored_are_not_flushed_twice(postgres_url: str,
                                                     spool_dir: Path) -> None:
    """A spool whose first half reached the database before its process died (a commit whose
    answer was lost) is flushed without duplicates or conflicts."""
    log = records(synthetic_log("x"))
    PostgresEventStore(postgres_url).append(log[:5])
    orphan = orphan_spool(spool_dir, postgres_url, log[:10])
    store = buffered(postgres_url)
    wait_flushed(store)
    assert stored(postgres_url, "x") == log[:10]
    assert not orphan.exists()
    assert not (orphan.parent / "rejected.jsonl").exists()


def test_a_conflicting_buffered_event_is_kept_aside(postgres_url: str,
                                                    spool_dir: Path) -> None:
    """A buffered event that differs from the stored one with its sequence is written to
    ``rejected.jsonl``, and the stored one stays."""
    log = records(synthetic_log("x"))
    PostgresEventStore(postgres_url).append(log[:1])
    impostor = StoredEvent("x", 1, log[1].topic, 1, log[1].timestamp, log[1].state)
    orphan = orphan_spool(spool_dir, postgres_url, [impostor, *log[1:3]])
    store = buffered(postgres_url)
    wait_flushed(store)
    assert stored(postgres_url, "x") == log[:3]
    assert (orphan.parent / "rejected.jsonl").read_bytes() == _line(impostor)
    assert buffered(postgres_url).buffered == 0  # the rejected file is not taken for a spool


def test_the_password_never_reaches_an_event_or_a_log_line(
        own_postgres: StoppablePostgres, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With the password inside the store URL (against advice) and an outage mid-init,
    neither the stored events nor any log line contain it."""
    password = own_postgres.password
    monkeypatch.delenv("PGPASSWORD")
    url = own_postgres.url().replace("llm_init@", f"llm_init:{password}@")
    config = LLMConfig(model_id="m",
                       runtime_env={"env_vars": {"LLM_INIT_EVENT_STORE": url}})
    steps = setting_steps()
    steps = type(steps)(download=ServerStep(own_postgres, "stop", steps.download),
                        placement_group=steps.placement_group,
                        engine=ServerStep(own_postgres, "start", SettingStep("engine", "e")))
    store = buffered(url)
    with caplog.at_level(logging.DEBUG):
        ctx = initialize_node_sync(config, event_store=store, steps=steps)
        wait_flushed(store)
    monkeypatch.setenv("PGPASSWORD", password)
    states = [r.state for r in stored(own_postgres.url(), ctx.init_id)]
    assert len(states) > 20
    assert not [s for s in states if password in s]
    assert not [r for r in caplog.records if password in r.getMessage()]
    assert os.environ.get("PGPASSWORD") == password


@pytest.mark.parametrize("inner", ["postgres", "memory"])
def test_reads_decode_through_the_inner_store(postgres_url: str, inner: str) -> None:
    """``read_decoded`` gives the inner store's events, decoded by it where it can."""
    store = BufferedEventStore(open_store(postgres_url if inner == "postgres" else "memory://",
                                          buffered=False), target=inner)
    log = records(synthetic_log("x"))
    try:
        store.append(log)
        wait_flushed(store)
        assert store.read_decoded("x") == [decode(r) for r in log]
    finally:
        store.close()
