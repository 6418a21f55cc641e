"""What an artifact store holds is untrusted text: shown as data, on one line, never as
terminal control, markup or a forged line of output."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from llm_init import LLMConfig, SQLiteEventStore, initialize_node_sync
from llm_init.artifacts.transfer import INDEX_PREFIX, manifest_name
from llm_init.errors import LLMInitError
from llm_init.events import ArtifactMissed, Event
from tests.support.cli import invoke
from tests.support.steps import FailingStep, local_steps
from tests.support.warm import CachingEngineStep, of_type, start

FORGED = "\x1b[2K\rwarm start: HIT\n"
MARKUP = "[/][bold red]"  # closes a tag never opened: Rich markup would fail on it


def hostile_miss(tmp_path: Path) -> tuple[Path, list[Event]]:
    """A cold start publishes; then the store gets an index entry for the same model whose
    name and values carry escape sequences, newlines and markup, and loses the real manifest:
    the next start's miss is explained by the hostile entry. Returns its event log and
    events."""
    store_dir = tmp_path / "store"
    store_dir.mkdir(exist_ok=True)
    engine = CachingEngineStep()
    _, cold = start(tmp_path, "node-a", str(store_dir), engine)
    (missed,) = of_type(cold, ArtifactMissed)
    (entry,) = (store_dir / INDEX_PREFIX).rglob(f"{missed.key}.json")
    parts = json.loads(entry.read_text())
    parts["engine.max_model_len"] = f"512{FORGED}{MARKUP}"
    (entry.parent / f"{FORGED}[bold red].json").write_text(json.dumps(parts))  # no ``/``
    (store_dir / manifest_name(missed.key)).unlink()
    log = tmp_path / "events.sqlite"
    events_store = SQLiteEventStore(log)
    _, warm = start(tmp_path, "node-b", str(store_dir), engine, publish=False,
                    event_store=events_store)
    events_store.close()
    return log, warm


def test_a_hostile_index_entry_reaches_the_event_as_printable_text(tmp_path: Path) -> None:
    """The miss's message, nearest artifact and differing parts hold the entry's text with
    its control characters escaped: no escape sequence and no newline."""
    _, warm = hostile_miss(tmp_path)
    (miss,) = of_type(warm, ArtifactMissed)
    assert "\\x1b[2K\\rwarm start: HIT\\n" in miss.message
    shown = [miss.message, miss.nearest, *(v for pair in miss.differs.values() for v in pair)]
    assert [s for s in shown if not s.isprintable()] == []


def test_a_hostile_index_entry_cannot_forge_a_timeline_line(tmp_path: Path) -> None:
    """``llm-init timeline`` of that start shows one warm-start line, a miss, with the entry's
    text escaped in it: no line of the output starts with "warm start: HIT"."""
    log, warm = hostile_miss(tmp_path)
    result = invoke("timeline", warm[0].init_id, "--store", str(log))
    assert result.exit_code == 0, result.output
    lines = [line.lstrip(" │├└─") for line in result.output.splitlines()]
    assert [line for line in lines if line.startswith("warm start: HIT")] == []
    assert [line for line in lines if line.startswith("warm start:")] == [
        next(line for line in lines if line.startswith("warm start: MISS"))]
    assert "\x1b" not in result.output
    assert f"512\\x1b[2K\\rwarm start: HIT\\n{MARKUP}" in result.output


def test_the_events_table_shows_store_text_as_data(tmp_path: Path) -> None:
    """``llm-init events`` of that start renders, without escape sequences, and shows the
    entry's markup as written."""
    log, warm = hostile_miss(tmp_path)
    result = invoke("events", warm[0].init_id, "--store", str(log), width=400)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    assert MARKUP in result.output


def test_a_hostile_index_entry_forges_no_log_line(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """The log line about that miss is one line, without escape sequences."""
    with caplog.at_level(logging.INFO, logger="llm_init.steps.warm_start"):
        hostile_miss(tmp_path)
    (line,) = [r.getMessage() for r in caplog.records if "nearest" in r.getMessage()]
    assert line.isprintable()


def test_a_failure_message_cannot_forge_a_timeline_line_or_break_its_markup(
        tmp_path: Path) -> None:
    """A step failing with escape sequences, a newline and stray markup in its message (text
    from a store or a server) leaves ``llm-init timeline`` rendering, with that text escaped on
    the failure's own lines."""
    log = tmp_path / "events.sqlite"
    store = SQLiteEventStore(log)
    with pytest.raises(LLMInitError):
        initialize_node_sync(LLMConfig(model_id="tiny"), event_store=store,
                             steps=local_steps(download=FailingStep(f"mirror said {FORGED}"
                                                                    f"{MARKUP}")))
    store.close()
    with sqlite3.connect(log) as db:
        ((init_id,),) = db.execute("SELECT DISTINCT init_id FROM events").fetchall()
    result = invoke("timeline", init_id, "--store", str(log))
    assert result.exit_code == 0, result.output
    lines = [line.lstrip(" │├└─") for line in result.output.splitlines()]
    assert [line for line in lines if line.startswith("warm start: HIT")] == []
    assert "\x1b" not in result.output
    assert f"mirror said \\x1b[2K\\rwarm start: HIT\\n{MARKUP}" in result.output


def test_a_hostile_manifest_forges_no_event_or_log_line(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A manifest naming an archive with escape sequences and a newline makes a miss whose
    message, in the event and in the log, is one printable line."""
    store_dir = tmp_path / "store"
    engine = CachingEngineStep()
    _, cold = start(tmp_path, "node-a", str(store_dir), engine)
    (missed,) = of_type(cold, ArtifactMissed)
    manifest = store_dir / manifest_name(missed.key)
    data = json.loads(manifest.read_text())
    data["archive"] = f"data{FORGED}.tar"
    manifest.write_text(json.dumps(data))
    with caplog.at_level(logging.INFO, logger="llm_init.steps.warm_start"):
        _, warm = start(tmp_path, "node-b", str(store_dir), engine, publish=False)
    (miss,) = of_type(warm, ArtifactMissed)
    assert miss.reason == "corrupt"
    assert "\\x1b[2K\\rwarm start: HIT\\n" in miss.message
    assert miss.message.isprintable()
    lines = [r.getMessage() for r in caplog.records if "warm start on" in r.getMessage()]
    assert lines
    assert all(line.isprintable() for line in lines)
