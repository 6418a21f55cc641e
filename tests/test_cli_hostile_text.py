"""The CLI shows recorded text as text: markup, escape sequences and newlines in what replicas
recorded cannot break a table or forge a line."""

from __future__ import annotations

from pathlib import Path

from llm_init import LLMConfig, SQLiteEventStore, initialize_node_sync
from tests.support.cli import invoke, table_rows
from tests.support.steps import local_steps

HOSTILE = "[/]evil\x1b[2K\rwarm start: HIT\n"


def record(path: Path, model_id: str, labels: dict[str, str]) -> str:
    """One initialization recorded in the SQLite log at ``path``; its init id."""
    store = SQLiteEventStore(path)
    ctx = initialize_node_sync(LLMConfig(model_id=model_id), event_store=store,
                               steps=local_steps(), labels=labels)
    store.close()
    return ctx.init_id


def test_list_shows_a_hostile_model_id_as_one_escaped_line(tmp_path: Path) -> None:
    """``llm-init list`` renders a model id holding markup, an escape sequence and a newline,
    shown escaped on its row."""
    log = tmp_path / "events.sqlite"
    init_id = record(log, f"m{HOSTILE}", {})
    result = invoke("list", "--store", str(log), width=300)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    assert [row[:3] for row in table_rows(result.output)] == [
        [init_id[:12], "m[/]evil\\x1b[2K\\rwarm start: HIT\\n", "completed"]]


def test_diff_shows_a_hostile_label_as_one_escaped_line(tmp_path: Path) -> None:
    """``llm-init diff`` of two inits whose label differs by such text renders, and shows it
    escaped."""
    log = tmp_path / "events.sqlite"
    a = record(log, "tiny", {"team": HOSTILE})
    b = record(log, "tiny", {"team": "blue"})
    result = invoke("diff", a, b, "--store", str(log), width=300)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output
    assert [row for row in table_rows(result.output) if row[0] == "labels"] == [
        ["labels", "team", "[/]evil\\x1b[2K\\rwarm start: HIT\\n", "blue"]]
