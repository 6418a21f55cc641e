"""Shared set-up of the warm-start tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _store_dir(tmp_path: Path) -> None:
    """The tests' directory store, ``tmp_path/store``, exists as a mounted shared directory
    would: llm-init refuses to open a directory store that does not exist."""
    (tmp_path / "store").mkdir(exist_ok=True)
