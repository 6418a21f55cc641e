"""The ``llm-init`` commands: each parses its options, runs a query, and prints a view."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.live import Live

from llm_init import fleet
from llm_init.cli import views, warm
from llm_init.cli.options import (
    Application,
    Deployment,
    Host,
    JsonLinesOption,
    JsonOption,
    Label,
    Model,
    Node,
    Outcome,
    Since,
    StoreOption,
    Until,
    fail,
    query,
    warn,
)
from llm_init.errors import LLMInitError
from llm_init.replay import ReplayedInitialization, read_events, replay, resolve_init_id
from llm_init.stores import EventStore, open_store
from llm_init.stores import check as store_check
from llm_init.telemetry.names import ENV_TRACE_URL as TRACE_URL_ENV

app = typer.Typer(help="Inspect LLM replica initializations recorded by llm-init.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(warm.app, name="warm")
T = TypeVar("T")


def _console() -> Console:
    # Read at each call, not bound at import: ``llm_init.cli.console`` may be replaced. Imported
    # here, since the package imports this module.
    import llm_init.cli as package

    return package.console


def _with_store(store_location: str | None, action: Callable[[EventStore], T]) -> T:
    """Open the store read-only, run ``action``, and turn our errors into one line and exit 1."""
    try:
        store = open_store(store_location, create=False)
    except LLMInitError as exc:
        raise fail(str(exc)) from None
    try:
        return action(store)
    except LLMInitError as exc:
        raise fail(str(exc)) from None
    finally:
        store.close()


@app.command("list")
def list_cmd(store: StoreOption = None,
             limit: Annotated[int, typer.Option(help="How many, newest first")] = 20,
             as_json: JsonLinesOption = False,
             model: Model = None, since: Since = None, until: Until = None,
             outcome: Outcome = None, host: Host = None, node: Node = None,
             application: Application = None, deployment: Deployment = None,
             label: Label = None,
             slowest: Annotated[int | None, typer.Option(
                 "--slowest", help="The N longest (recorded duration) instead of the newest"
             )] = None) -> None:
    """Recent initializations with model, outcome, start time and phase durations; filter by
    model, time, outcome, host, node, application, deployment and labels."""
    inits = _with_store(store, lambda s: fleet.find_initializations(s, query(
        model, since, until, outcome, host, node, application, deployment, label,
        order="slowest" if slowest else "newest", limit=slowest or limit)))
    if as_json:
        for r in inits:
            print(json.dumps(views.list_line(r)))
        return
    _console().print(views.list_table(inits, _console().width))


@app.command()
def timeline(init_id: str, store: StoreOption = None, as_json: JsonOption = False,
             spans: Annotated[bool, typer.Option(
                 "--spans", help="Show each entry's span id, to find it in the trace")] = False,
             ) -> None:
    """A waterfall of phases, default steps and hook calls, with durations.

    The head shows the trace id (and a link when LLM_INIT_TRACE_URL is a template such as
    http://jaeger:16686/trace/{trace_id}); --spans adds each entry's span id."""
    def replayed(s: EventStore) -> ReplayedInitialization:
        found = replay(read_events(s, resolve_init_id(s, init_id)))
        disagreement = store_check.index_disagreement(s, found)
        if disagreement is not None:  # the log is shown; the index is reported, not believed
            warn(f"{disagreement}; showing the log (run llm-init check)")
        return found

    r = _with_store(store, replayed)
    if as_json:
        print(json.dumps(views.timeline_dict(r)))
        return
    _console().print(views.timeline_tree(r, spans=spans, trace_url=os.environ.get(TRACE_URL_ENV),
                                         width=_console().width))


@app.command()
def events(init_id: str, store: StoreOption = None,
           as_json: JsonLinesOption = False,
           span: Annotated[str | None, typer.Option(
               "--span", help="Only the events emitted under this span id (from a trace)")]
           = None,
           flat: Annotated[bool, typer.Option(
               "--flat", help="JSON lines in the old flat shape, fields beside the envelope")]
           = False) -> None:
    """The recorded events of one initialization, as a table or JSON lines (export's shape)."""
    evs = _with_store(store, lambda s: read_events(s, resolve_init_id(s, init_id)))
    if span is not None:
        evs = [e for e in evs if e.span_id == span.lower()]
        if not evs:
            raise fail(f"no event of {init_id} was emitted under span {span}")
    if as_json or flat:
        shape = views.event_line if flat else views.event_dict
        for e in evs:
            print(json.dumps(shape(e)))
        return
    _console().print(views.events_table(evs, _console().width))


@app.command("replay")
def replay_cmd(init_id: str, store: StoreOption = None,
               at: Annotated[int | None, typer.Option("--at", help="Sequence number")] = None,
               ) -> None:
    """The context as it stood after event SEQ (default: the last event), as JSON."""
    def at_event(s: EventStore) -> ReplayedInitialization:
        events = read_events(s, resolve_init_id(s, init_id))
        first, last = events[0].sequence, events[-1].sequence
        if at is not None and not first <= at <= last:
            raise fail(f"--at {at} is out of range: {events[0].init_id} has events "
                        f"{first}..{last}")
        return replay(events, at)

    r = _with_store(store, at_event)
    print(json.dumps(views.replay_dict(r), indent=2))


@app.command()
def diff(init_a: str, init_b: str, store: StoreOption = None,
         as_json: JsonOption = False) -> None:
    """Two initializations side by side: time per phase, step and hook, then every run fact,
    label, config value and context value that differs (A is the first id)."""
    def both(s: EventStore) -> fleet.InitDiff:
        return fleet.diff_initializations(read_events(s, resolve_init_id(s, init_a)),
                                          read_events(s, resolve_init_id(s, init_b)))

    d = _with_store(store, both)
    if as_json:
        print(json.dumps(d.to_dict()))
        return
    _console().print(views.diff_view(d))


@app.command()
def stats(store: StoreOption = None, as_json: JsonOption = False,
          model: Model = None, since: Since = None, until: Until = None,
          outcome: Outcome = None, host: Host = None, node: Node = None,
          application: Application = None, deployment: Deployment = None,
          label: Label = None,
          weights: Annotated[bool, typer.Option(
              "--weights", help="p50/p95 of weight throughput (bytes/s) per model and phase "
                                "(download, engine) instead")] = False) -> None:
    """p50/p95/p99 of each phase (and of whole inits) over the matching inits, computed from
    the recorded PhaseCompleted and InitializationCompleted events; with --weights, p50/p95 of
    the weights' throughput per model, for the download and for the engine's own load."""
    matching = query(model, since, until, outcome, host, node, application, deployment, label,
                     limit=None)
    if weights:
        moved = _with_store(store, lambda s: fleet.weight_stats(s, matching))
        if as_json:
            print(json.dumps([w.to_dict() for w in moved]))
            return
        _console().print(views.weight_stats_table(moved, _console().width))
        return
    found = _with_store(store, lambda s: fleet.phase_stats(s, matching))
    if as_json:
        print(json.dumps([p.to_dict() for p in found]))
        return
    title = f"phase durations{' of ' + model if model else ''}"
    _console().print(views.stats_table(found, title, _console().width))


@app.command()
def status(store: StoreOption = None, as_json: JsonOption = False,
           follow: Annotated[bool, typer.Option(
               "--follow", "-f", help="Keep updating as events arrive (Ctrl-C stops)")] = False,
           timeout: Annotated[float | None, typer.Option(
               help="With --follow: stop after this many seconds")] = None,
           model: Model = None, since: Since = None, host: Host = None, node: Node = None,
           application: Application = None, deployment: Deployment = None,
           label: Label = None) -> None:
    """Every initialization in progress across the fleet: current phase, what runs, elapsed
    time. With --follow it updates as events arrive (pushed by PostgreSQL, a light poll on
    SQLite); with --json it prints one line per init, or per change when following."""
    matching = query(model, since, None, None, host, node, application, deployment, label)
    if not follow:
        now = datetime.now(UTC)
        def disagrees(st: fleet.InitStatus) -> None:
            warn(f"{st.init_id}: the index says running but the log says {st.outcome}; "
                  "left out (run llm-init check)")

        running = _with_store(store, lambda s: fleet.fleet_status(
            s, matching, on_disagreement=disagrees))
        if as_json:
            for st in running:
                print(json.dumps(st.to_dict(now)))
            return
        _console().print(views.status_table(running, now, f"{len(running)} in progress",
                                            _console().width))
        return

    def follow_in(s: EventStore) -> None:
        follower = fleet.FleetFollower(s, matching)
        if as_json:
            def emit(_: list[fleet.InitStatus], changed: list[fleet.InitStatus]) -> None:
                now = datetime.now(UTC)
                for st in changed:
                    print(json.dumps(st.to_dict(now)), flush=True)

            follower.follow(emit, timeout_s=timeout)
            return
        console = _console()
        with Live(console=console, auto_refresh=False) as live:
            def show(running: list[fleet.InitStatus], _: list[fleet.InitStatus]) -> None:
                now = datetime.now(UTC)
                title = f"{len(running)} in progress  (following; {now:%H:%M:%S} UTC)"
                live.update(views.status_table(running, now, title, console.width),
                            refresh=True)

            follower.follow(show, timeout_s=timeout)

    _with_store(store, follow_in)


@app.command("export")
def export_cmd(init_ids: Annotated[list[str] | None, typer.Argument(
                   help="Init ids (unique prefixes work); or use filters / --all")] = None,
               store: StoreOption = None,
               output: Annotated[Path | None, typer.Option(
                   "--output", "-o", help="File to write (default: standard output)")] = None,
               all_inits: Annotated[bool, typer.Option("--all", help="Every init")] = False,
               model: Model = None, since: Since = None, until: Until = None,
               outcome: Outcome = None, host: Host = None, node: Node = None,
               application: Application = None, deployment: Deployment = None,
               label: Label = None) -> None:
    """Write initializations' events as JSON lines, for ``llm-init import`` into another
    store; sequence numbers and ids are kept."""
    filtered = any(v is not None for v in (model, since, until, outcome, host, node,
                                           application, deployment, label))
    if not init_ids and not filtered and not all_inits:
        raise fail("name init ids, give filters, or pass --all")
    matching = query(model, since, until, outcome, host, node, application, deployment, label,
                     limit=None)

    def lines(s: EventStore) -> int:
        ids = ([resolve_init_id(s, i) for i in init_ids] if init_ids
               else fleet.query_initializations(s, matching))
        out = output.open("w") if output else sys.stdout
        try:
            count = 0
            for line in fleet.export_lines(s, ids):
                out.write(line + "\n")
                count += 1
        finally:
            if output:
                out.close()
        return count

    count = _with_store(store, lines)
    if output:
        Console(stderr=True).print(f"exported {count} events to {output}", highlight=False)


@app.command("import")
def import_cmd(source: Annotated[str, typer.Argument(help="A file from export, or - for stdin")],
               store: StoreOption = None, as_json: JsonOption = False) -> None:
    """Append exported events to a store (created if needed), the whole file in one
    transaction after every line is checked; inits already there unchanged are skipped,
    conflicting ones, sequence gaps and repeated events refused, naming the line."""
    try:
        target = open_store(store, create=True, buffered=False)
    except LLMInitError as exc:
        raise fail(str(exc)) from None
    try:
        if source == "-":
            result = fleet.import_lines(target, sys.stdin.buffer)
        else:
            # Bytes: a line that is not UTF-8 is reported by its number, not a traceback.
            with open(source, "rb") as lines:
                result = fleet.import_lines(target, lines)
    except OSError as exc:
        raise fail(f"cannot read {source}: {exc.strerror}") from None
    except LLMInitError as exc:
        raise fail(str(exc)) from None
    finally:
        target.close()
    if as_json:
        print(json.dumps({"imported": result.imported, "unchanged": result.unchanged}))
        return
    _console().print(f"imported {sum(result.imported.values())} events of "
                  f"{len(result.imported)} initializations; {len(result.unchanged)} already "
                  f"present unchanged", highlight=False)


@app.command()
def check(store: StoreOption = None,
          as_json: JsonLinesOption = False) -> None:
    """Verify the store: each init's log reads, decodes and runs 1..N without gaps, its index
    row agrees with the replayed log, and (SQLite) the file passes PRAGMA integrity_check.
    Exits 1 when anything is wrong."""
    report = _with_store(store, store_check.check_store)
    for problem in report.problems:
        print(json.dumps(problem.to_dict()) if as_json else f"{problem.kind}: {problem.message}")
    if not as_json:
        n = len(report.problems)
        verdict = "ok" if report.ok else f"{n} problem{'' if n == 1 else 's'}"
        print(f"checked {report.checked} initializations: {verdict}",
              file=sys.stdout if report.ok else sys.stderr)
    if not report.ok:
        raise typer.Exit(code=1)


@app.command()
def demo(workdir: Annotated[str | None, typer.Option(help="Model and event store go here")] = None,
         port: Annotated[int, typer.Option(help="Serve's HTTP port (loopback)")] = 8000,
         metrics_port: Annotated[int, typer.Option(help="Ray's Prometheus port")] = 8080,
         keep: Annotated[bool, typer.Option(help="Keep serving until Ctrl-C")] = False,
         warm_start: Annotated[bool, typer.Option(
             "--warm-start", help="Deploy twice with compilation on: a cold start that "
             "publishes its cache, then a warm start that restores it (minutes)")] = False,
         ) -> None:
    """Deploy a tiny model on a local Ray cluster through llm-init and show its start-up."""
    if warm_start:
        from llm_init.demo.warm import run_warm_demo

        raise typer.Exit(run_warm_demo(workdir=workdir, http_port=port,
                                       metrics_port=metrics_port))
    from llm_init.demo.run import run_demo

    raise typer.Exit(run_demo(workdir=workdir, http_port=port, metrics_port=metrics_port,
                              keep=keep))
