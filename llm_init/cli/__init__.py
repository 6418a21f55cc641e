"""``llm-init``: list, inspect and replay initializations recorded in an event store.

The package: ``commands`` (Typer commands: parse, query, view, print), ``views`` (what is
shown, as pure functions), ``options`` (shared options) and ``warm`` (the ``warm`` commands).
"""

from __future__ import annotations

import sys

from rich.console import Console

# Commands print through this attribute, read when they run: a caller (a test, an embedding
# tool) may put a console of its own width here.
console = Console()

# After ``console``: the commands read it from this module.
from llm_init.cli import commands  # noqa: E402  (see above)
from llm_init.cli.commands import app  # noqa: E402  (see above)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["app", "commands", "console", "main"]
