"""The Typer options the CLI's commands share, and the query their filters make."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer

from llm_init import fleet
from llm_init.errors import LLMInitError
from llm_init.stores import STORE_ENV_VAR, InitQuery

StoreOption = Annotated[str | None, typer.Option(
    "--store", envvar=STORE_ENV_VAR,
    help="Event store: a SQLite path, sqlite:///path, postgresql://user@host/db or memory://")]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON for scripts")]
JsonLinesOption = Annotated[bool, typer.Option("--json", help="JSON lines")]


class OutcomeChoice(StrEnum):
    running = "running"
    completed = "completed"
    failed = "failed"
    abandoned = "abandoned"


# The filters shared by list, stats, status and export (see ``query``).
Model = Annotated[str | None, typer.Option("--model", help="Only this model id")]
Since = Annotated[str | None, typer.Option(
    "--since", help="Started within this span (90s, 15m, 1h, 2d, 1w) or after an ISO time")]
Until = Annotated[str | None, typer.Option("--until", help="Started before (span or ISO time)")]
Outcome = Annotated[OutcomeChoice | None, typer.Option("--outcome", help="Only this outcome")]
Host = Annotated[str | None, typer.Option("--host", help="Only inits on this host")]
Node = Annotated[str | None, typer.Option("--node", help="Only this Ray node id (label)")]
Application = Annotated[str | None, typer.Option(
    "--application", "--app", help="Only this Serve application (label)")]
Deployment = Annotated[str | None, typer.Option(
    "--deployment", help="Only this Serve deployment (label)")]
Label = Annotated[list[str] | None, typer.Option(
    "--label", help="key=value that must be among the init's labels; repeatable")]


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` and return the exit (code 1) to raise."""
    # Plain print: rich would wrap a long path onto several lines.
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code=1)


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def query(model: str | None = None, since: str | None = None, until: str | None = None,
          outcome: OutcomeChoice | None = None, host: str | None = None,
          node: str | None = None, application: str | None = None,
          deployment: str | None = None, label: list[str] | None = None,
          **rest: Any) -> InitQuery:
    """The fleet query the filter options name; a filter that does not parse exits 1."""
    try:
        return InitQuery(
            model_id=model, since=fleet.parse_time(since) if since else None,
            until=fleet.parse_time(until) if until else None,
            outcome=outcome.value if outcome else None, host=host, node_id=node,
            application=application, deployment=deployment,
            labels=fleet.parse_labels(label or []), now=datetime.now(UTC), **rest,
        )
    except LLMInitError as exc:
        raise fail(str(exc)) from None
