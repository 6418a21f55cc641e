"""``llm-init``: list, inspect and replay initializations recorded in an event store."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.tree import Tree

from llm_init.errors import LLMInitError
from llm_init.replay import (
    ReplayedInitialization,
    list_initializations,
    read_events,
    replay,
    resolve_init_id,
)
from llm_init.stores import STORE_ENV_VAR, EventStore, encode, open_store

app = typer.Typer(help="Inspect LLM replica initializations recorded by llm-init.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()
StoreOption = Annotated[str | None, typer.Option(
    "--store", envvar=STORE_ENV_VAR, help="Event store: a SQLite path, sqlite:///path or memory://")]
T = TypeVar("T")

_STATUS_STYLE = {"completed": "green", "failed": "bold red", "skipped": "yellow",
                 "running": "cyan"}


def _fail(message: str) -> typer.Exit:
    # Plain print: rich would wrap a long path onto several lines.
    print(f"error: {message}", file=sys.stderr)
    return typer.Exit(code=1)


def _with_store(store_location: str | None, action: Callable[[EventStore], T]) -> T:
    """Open the store read-only, run ``action``, and turn our errors into one line and exit 1."""
    try:
        store = open_store(store_location, create=False)
    except LLMInitError as exc:
        raise _fail(str(exc)) from None
    try:
        return action(store)
    except LLMInitError as exc:
        raise _fail(str(exc)) from None
    finally:
        store.close()


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


@app.command("list")
def list_cmd(store: StoreOption = None,
             limit: Annotated[int, typer.Option(help="How many, newest first")] = 20,
             as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False) -> None:
    """Recent initializations with model, outcome, start time and phase durations."""
    inits = _with_store(store, lambda s: list_initializations(s, limit))
    if as_json:
        for r in inits:
            print(json.dumps(_summary(r)))
        return
    table = Table(title="initializations", title_justify="left")
    for col in ("init id", "model", "outcome", "started (UTC)", "total", "download",
                "placement", "engine", "phase now"):
        table.add_column(col)
    for r in inits:
        d = r.phase_durations
        table.add_row(
            r.init_id[:12], r.model_id,
            f"[{_STATUS_STYLE.get(r.outcome, '')}]{r.outcome}[/]",
            r.started_at.strftime("%Y-%m-%d %H:%M:%S") if r.started_at else "-",
            _secs(r.duration_s), _secs(d.get("download")), _secs(d.get("placement_group")),
            _secs(d.get("engine_init")), r.current_phase if r.outcome == "running" else "",
        )
    console.print(table)


@app.command()
def timeline(init_id: str, store: StoreOption = None) -> None:
    """A waterfall of phases, default steps and hook calls, with durations."""
    r = _with_store(store, lambda s: replay(read_events(s, resolve_init_id(s, init_id))))
    total = max(r.duration_s or 0.0, 1e-9)
    t0 = r.started_at
    head = (f"[bold]{r.init_id}[/] {r.model_id} "
            f"[{_STATUS_STYLE.get(r.outcome, '')}]{r.outcome}[/] in {_secs(r.duration_s)}")
    if r.trace_id:
        head += f"  trace {r.trace_id}"
    tree = Tree(head)
    branch = tree
    width = 30
    for e in r.timeline:
        offset = (e.started_at - t0).total_seconds() if t0 else 0.0
        start_col = min(width - 1, int(width * offset / total))
        bar_len = max(1, int(width * (e.duration_s or 0.0) / total))
        bar = " " * start_col + "█" * min(bar_len, width - start_col)
        style = _STATUS_STYLE.get(e.status, "")
        label = e.name if e.kind == "phase" else f"{e.kind} {e.name}"
        if e.actor:
            label += f" [dim]({e.actor})[/]"
        line = (f"[{style}]{bar:<{width}}[/] +{_secs(offset):>9} {_secs(e.duration_s):>9}  "
                f"{label}")
        if e.status in ("skipped", "failed"):
            line += f" [{style}]{e.status.upper()}[/] {e.detail}"
        if e.kind == "phase":
            branch = tree.add(line)
        else:
            branch.add(line)
    if r.error:
        tree.add(f"[bold red]error:[/] {r.error}")
    console.print(tree)


@app.command()
def events(init_id: str, store: StoreOption = None,
           as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False) -> None:
    """The recorded events of one initialization, as a table or JSON lines."""
    evs = _with_store(store, lambda s: read_events(s, resolve_init_id(s, init_id)))
    if as_json:
        for e in evs:
            rec = encode(e)
            print(json.dumps({"init_id": rec.init_id, "sequence": rec.sequence, "type": rec.topic,
                              "schema_version": rec.schema_version, "timestamp": rec.timestamp,
                              **json.loads(rec.state)}))
        return
    table = Table(title=f"events of {evs[0].init_id}", title_justify="left")
    for col in ("seq", "time (UTC)", "type", "phase", "what"):
        table.add_column(col)
    for e in evs:
        rec = json.loads(encode(e).state)
        what = " ".join(f"{k}={v}" for k, v in rec.items()
                        if k not in ("phase", "trace_id", "span_id", "node_id", "config",
                                     "context") and v not in (None, "", [], {}))
        table.add_row(str(e.sequence), e.timestamp.strftime("%H:%M:%S.%f")[:-3], e.TYPE,
                      str(rec.get("phase", "")), what[:120])
    console.print(table)


@app.command("replay")
def replay_cmd(init_id: str, store: StoreOption = None,
               at: Annotated[int | None, typer.Option("--at", help="Sequence number")] = None,
               ) -> None:
    """The context as it stood after event SEQ (default: the last event), as JSON."""
    r = _with_store(store, lambda s: replay(read_events(s, resolve_init_id(s, init_id)), at))
    print(json.dumps({"init_id": r.init_id, "sequence": r.last_sequence, "outcome": r.outcome,
                      "phase": r.current_phase, "context": r.state}, indent=2))


@app.command()
def demo(workdir: Annotated[str | None, typer.Option(help="Model and event store go here")] = None,
         port: Annotated[int, typer.Option(help="Serve's HTTP port (loopback)")] = 8000,
         metrics_port: Annotated[int, typer.Option(help="Ray's Prometheus port")] = 8080,
         keep: Annotated[bool, typer.Option(help="Keep serving until Ctrl-C")] = False) -> None:
    """Deploy a tiny model on a local Ray cluster through llm-init and show its start-up."""
    from llm_init.demo.run import run_demo

    raise typer.Exit(run_demo(workdir=workdir, http_port=port, metrics_port=metrics_port,
                              keep=keep))


def _summary(r: ReplayedInitialization) -> dict[str, Any]:
    return {"init_id": r.init_id, "model_id": r.model_id, "outcome": r.outcome,
            "started_at": r.started_at.isoformat() if r.started_at else None,
            "duration_s": r.duration_s, "phases": r.phase_durations,
            "current_phase": r.current_phase, "error": r.error, "labels": r.labels}


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
