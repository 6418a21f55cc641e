"""Specification of ``open_store``'s reading of a location: known schemes open their store,
anything else that looks like ``scheme://`` is refused instead of becoming a file path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llm_init import EventStoreError, LLMConfig, initialize_node_sync
from llm_init.stores import InMemoryEventStore, SQLiteEventStore, open_store
from tests.support.steps import setting_steps


@pytest.mark.parametrize("location", ["mysql://h/db", "postgress://u@h/db", "sqlite3:///x.db",
                                      "memory://x"])
def test_a_writer_refuses_an_unknown_scheme_and_creates_nothing(
        location: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An initialization whose store location has a mistyped scheme fails to start with an
    ``EventStoreError`` and leaves no file behind."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LLM_INIT_EVENT_STORE", location)
    with pytest.raises(EventStoreError, match="scheme"):
        initialize_node_sync(LLMConfig(model_id="m"), steps=setting_steps())
    assert os.listdir(tmp_path) == []


def test_the_password_of_a_mistyped_url_is_not_repeated(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The error quotes only the scheme, never the rest of the URL."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EventStoreError) as raised:
        open_store("mysql://user:hunter2@h/db")
    assert "hunter2" not in str(raised.value)


def test_plain_paths_and_known_schemes_still_open(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A relative or absolute path, ``sqlite://`` and ``memory://`` open as before."""
    monkeypatch.chdir(tmp_path)
    opened = [open_store(p) for p in ("rel/events.sqlite", str(tmp_path / "abs.sqlite"),
                                      f"sqlite://{tmp_path / 'url.sqlite'}", "memory://")]
    assert [type(s) for s in opened] == [SQLiteEventStore] * 3 + [InMemoryEventStore]
    for s in opened:
        s.close()
