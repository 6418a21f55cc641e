"""Run the ``llm-init`` CLI in process at a width the test chooses, whatever the terminal.

Rich reads ``COLUMNS`` once, when the CLI module builds its console at import; a test setting
``COLUMNS`` afterwards would not be heard, and one exported by the developer's shell would be.
``invoke`` gives the CLI a console of exactly ``width`` cells for the call instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from unittest import mock

from click.testing import Result
from rich.console import Console
from typer.testing import CliRunner

from llm_init import cli


def invoke(*args: str, width: int = 200, env: Mapping[str, str] | None = None) -> Result:
    """``llm-init ARGS`` with output ``width`` cells wide."""
    with mock.patch.object(cli, "console", Console(width=width)):
        return CliRunner().invoke(cli.app, list(args), env=dict(env or {}))
