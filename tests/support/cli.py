"""Run the ``llm-init`` CLI in process at a width the test chooses, whatever the terminal.

Rich reads ``COLUMNS`` once, when the CLI module builds its console at import; a test setting
``COLUMNS`` afterwards would not be heard, and one exported by the developer's shell would be.
``invoke`` gives the CLI a console of exactly ``width`` cells for the call instead.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping
from datetime import datetime, tzinfo
from unittest import mock

from click.testing import Result
from rich.console import Console
from typer.testing import CliRunner

from llm_init import cli
from llm_init.cli import commands


def invoke(*args: str, width: int = 200, env: Mapping[str, str] | None = None) -> Result:
    """``llm-init ARGS`` with output ``width`` cells wide."""
    with mock.patch.object(cli, "console", Console(width=width)):
        return CliRunner().invoke(cli.app, list(args), env=dict(env or {}))


def table_rows(out: str) -> list[list[str]]:
    """The body rows of a rendered table, each as its cells."""
    return [[cell.strip() for cell in line.strip()[1:-1].split("│")]
            for line in out.splitlines() if line.startswith("│")]


def entries(out: str) -> list[str]:
    """The entries of a ``timeline`` waterfall without their bars and times: each row's label,
    with the lines a narrow row was broken into joined back."""
    found: list[str] = []
    for line in out.splitlines()[1:]:
        text = line.lstrip("│├└─ ")
        label = re.split(r"[+]\s*[\d.]+ (?:ms|s|min)\s+[\d.]+ (?:ms|s|min)\s*", text)
        if len(label) == 2:
            found.append(label[1].strip())
        elif found and not text.startswith(("before it", "after it")):
            found[-1] = f"{found[-1]} {text.strip()}".strip()
    return found


@contextlib.contextmanager
def clock_at(now: datetime) -> Iterator[None]:
    """The CLI's commands read ``now`` as the time, for output that depends on it (elapsed)."""

    class Frozen(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> Frozen:  # type: ignore[override]  # a fixed instant, the same signature
            return cls.fromtimestamp(now.timestamp(), tz)

    with mock.patch.object(commands, "datetime", Frozen):
        yield
