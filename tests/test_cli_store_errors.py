"""Specification of how the ``llm-init`` CLI meets bad store input: a mistyped store scheme,
broken import files and an out-of-range ``replay --at`` each give one line naming the culprit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm_init.cli import app
from llm_init.fleet import export_lines
from llm_init.stores import SQLiteEventStore, open_store
from tests.support.logs import records, synthetic_log

runner = CliRunner()


def cli(*args: str, stdin: bytes | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"}, input=stdin)
    return result.exit_code, result.output


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "events.sqlite"
    s = SQLiteEventStore(path)
    s.append(records(synthetic_log("abc123")))
    s.close()
    return path


@pytest.fixture
def dump(store: Path) -> list[str]:
    """The exported lines of the one init in ``store``."""
    s = SQLiteEventStore(store, create=False)
    try:
        return list(export_lines(s, ["abc123"]))
    finally:
        s.close()


@pytest.mark.parametrize("location", ["mysql://h/db", "postgress://user@h/db"])
def test_an_unknown_store_scheme_is_a_one_line_error_and_creates_nothing(
        location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A mistyped scheme exits 1 with one line listing the supported schemes, and no file is
    created under the working directory."""
    monkeypatch.chdir(tmp_path)
    code, out = cli("import", "-", "--store", location, stdin=b"")
    assert code == 1
    assert out.strip().splitlines() == [out.strip()]
    assert f"unknown event store scheme '{location.split('//')[0]}//'" in out
    assert "postgresql://" in out
    assert "sqlite://" in out
    assert os.listdir(tmp_path) == []


def test_a_mistyped_scheme_never_opens_a_sqlite_file_for_reading(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    """``list --store mysql://h/db`` names the scheme instead of a missing SQLite path."""
    monkeypatch.chdir(tmp_path)
    code, out = cli("list", "--store", "mysql://h/db")
    assert (code, out.strip()) == (1, "error: unknown event store scheme 'mysql://'; "
                                      "supported: sqlite://, postgresql://, postgres://, "
                                      "memory://, or a plain file path")


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_importing_binary_garbage_names_the_line(tmp_path: Path, dump: list[str]) -> None:
    """A file with a line that is not UTF-8 exits 1 naming that line, with no traceback."""
    bad = write(tmp_path / "bad.jsonl", [dump[0].encode(), b"\x89PNG\r\x1a\xff\xfe\x00"])
    code, out = cli("import", str(bad), "--store", str(tmp_path / "t.sqlite"))
    assert code == 1
    assert out.startswith("error: line 2 is not UTF-8 text")
    assert len(out.strip().splitlines()) == 1


def test_an_import_with_a_missing_event_is_refused_whole(tmp_path: Path,
                                                         dump: list[str]) -> None:
    """A file lacking one event of an init is refused, naming the line after the gap, and the
    target gets nothing of it."""
    target = tmp_path / "t.sqlite"
    gapped = write(tmp_path / "gap.jsonl", [line.encode() for i, line in enumerate(dump)
                                            if i != 4])
    code, out = cli("import", str(gapped), "--store", str(target))
    assert code == 1
    assert out.strip() == ("error: line 5: event abc123#6 follows a gap, abc123#5 is neither "
                           "in the file nor in the target; nothing was imported")
    assert SQLiteEventStore(target).read("abc123") == []


def test_a_line_repeated_inside_the_file_is_named_as_such(tmp_path: Path,
                                                          dump: list[str]) -> None:
    """A duplicated line is reported as repeating an earlier line of the file, not as a
    collision with the target."""
    doubled = write(tmp_path / "dup.jsonl", [line.encode() for line in
                                             [*dump[:3], dump[2], *dump[3:]]])
    code, out = cli("import", str(doubled), "--store", str(tmp_path / "t.sqlite"))
    assert code == 1
    assert out.strip() == ("error: line 4 repeats event abc123#3 of line 3; nothing was "
                           "imported")


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_bad_line_late_in_the_file_leaves_earlier_inits_out(
        tmp_path: Path, dump: list[str], kind: str, request: pytest.FixtureRequest) -> None:
    """A file whose second init has a broken line imports nothing, not even the first init."""
    target = (str(tmp_path / "t.sqlite") if kind == "sqlite"
              else request.getfixturevalue("postgres_url"))
    other = [line.replace("abc123", "def456") for line in dump]
    bad = write(tmp_path / "two.jsonl", [line.encode() for line in
                                         [*dump, *other[:-1], '{"init_id": "def456"}']])
    code, out = cli("import", str(bad), "--store", target)
    assert code == 1
    assert f"line {2 * len(dump)} is not an exported llm-init event" in out
    store = open_store(target, buffered=False)
    try:
        assert store.list_init_ids() == []
    finally:
        store.close()


def test_importing_from_stdin_still_works(tmp_path: Path, dump: list[str]) -> None:
    """``import -`` reads the lines from standard input."""
    code, out = cli("import", "-", "--store", str(tmp_path / "t.sqlite"), "--json",
                    stdin="\n".join(dump).encode())
    assert (code, json.loads(out)["imported"]) == (0, {"abc123": len(dump)})


@pytest.mark.parametrize("at", ["0", "-1", "99"])
def test_replay_at_outside_the_log_names_the_valid_range(store: Path, at: str) -> None:
    """``replay --at`` before the first or past the last event exits 1 naming 1..N."""
    n = len(synthetic_log("abc123"))
    code, out = cli("replay", "abc", "--store", str(store), "--at", at)
    assert (code, out.strip()) == (1, f"error: --at {at} is out of range: abc123 has events "
                                      f"1..{n}")


def test_replay_at_the_last_event_is_the_final_state(store: Path) -> None:
    """``replay --at N`` for the last event N is accepted and gives the final outcome."""
    n = len(synthetic_log("abc123"))
    code, out = cli("replay", "abc123", "--store", str(store), "--at", str(n))
    assert (code, json.loads(out)["outcome"]) == (0, "completed")
