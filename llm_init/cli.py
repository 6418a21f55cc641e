"""``llm-init``: list, inspect and replay initializations recorded in an event store."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.tree import Tree

from llm_init import cli_warm, fleet
from llm_init.errors import LLMInitError
from llm_init.events import Event, InitializationStarted
from llm_init.fleet import render
from llm_init.replay import (
    ReplayedInitialization,
    read_events,
    replay,
    resolve_init_id,
)
from llm_init.steps.vllm_cache_use import CacheUse
from llm_init.stores import STORE_ENV_VAR, EventStore, InitQuery, encode, open_store
from llm_init.stores import check as store_check
from llm_init.telemetry.names import ENV_TRACE_URL as TRACE_URL_ENV
from llm_init.text import printable

app = typer.Typer(help="Inspect LLM replica initializations recorded by llm-init.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(cli_warm.app, name="warm")
console = Console()
StoreOption = Annotated[str | None, typer.Option(
    "--store", envvar=STORE_ENV_VAR,
    help="Event store: a SQLite path, sqlite:///path, postgresql://user@host/db or memory://")]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON for scripts")]
T = TypeVar("T")


class OutcomeChoice(StrEnum):
    running = "running"
    completed = "completed"
    failed = "failed"
    abandoned = "abandoned"


# The filters shared by list, stats, status and export (see ``_query``).
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

_STATUS_STYLE = {"completed": "green", "failed": "bold red", "skipped": "yellow",
                 "running": "cyan", "abandoned": "magenta"}


# On a narrow console (80 columns, or a pipe) the least important columns go first; the init
# id, the handle for every other command, is never cut.
_LIST_COLS = (render.Col("init id"), render.Col("model", fold=True), render.Col("outcome"),
              render.Col("started (UTC)", 5), render.Col("total", 1), render.Col("download", 4),
              render.Col("placement", 6), render.Col("engine", 3), render.Col("phase now", 2),
              render.Col("host", 7))
_EVENT_COLS = (render.Col("seq"), render.Col("time (UTC)", 2), render.Col("type"),
               render.Col("phase", 1), render.Col("what", fold=True, room=20))


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


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _secs(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def _query(model: str | None = None, since: str | None = None, until: str | None = None,
           outcome: OutcomeChoice | None = None, host: str | None = None,
           node: str | None = None, application: str | None = None,
           deployment: str | None = None, label: list[str] | None = None,
           **rest: Any) -> InitQuery:
    try:
        return InitQuery(
            model_id=model, since=fleet.parse_time(since) if since else None,
            until=fleet.parse_time(until) if until else None,
            outcome=outcome.value if outcome else None, host=host, node_id=node,
            application=application, deployment=deployment,
            labels=fleet.parse_labels(label or []), now=datetime.now(UTC), **rest,
        )
    except LLMInitError as exc:
        raise _fail(str(exc)) from None


def _listed(store: EventStore, query: InitQuery) -> list[tuple[ReplayedInitialization, str]]:
    out = []
    for init_id in fleet.query_initializations(store, query):
        events = read_events(store, init_id)
        out.append((replay(events, now=query.now), _host(events)))
    return out


def _host(events: list[Event]) -> str:
    first = events[0]
    return first.host if isinstance(first, InitializationStarted) else ""


@app.command("list")
def list_cmd(store: StoreOption = None,
             limit: Annotated[int, typer.Option(help="How many, newest first")] = 20,
             as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
             model: Model = None, since: Since = None, until: Until = None,
             outcome: Outcome = None, host: Host = None, node: Node = None,
             application: Application = None, deployment: Deployment = None,
             label: Label = None,
             slowest: Annotated[int | None, typer.Option(
                 "--slowest", help="The N longest (recorded duration) instead of the newest"
             )] = None) -> None:
    """Recent initializations with model, outcome, start time and phase durations; filter by
    model, time, outcome, host, node, application, deployment and labels."""
    query = _query(model, since, until, outcome, host, node, application, deployment, label,
                   order="slowest" if slowest else "newest", limit=slowest or limit)
    inits = _with_store(store, lambda s: _listed(s, query))
    if as_json:
        for r, where in inits:
            print(json.dumps({**_summary(r), "host": where}))
        return
    rows = []
    for r, where in inits:
        d = r.phase_durations
        rows.append((
            render.plain(r.init_id[:12]), render.plain(r.model_id),
            f"[{_STATUS_STYLE.get(r.outcome, '')}]{r.outcome}[/]",
            r.started_at.strftime("%Y-%m-%d %H:%M:%S") if r.started_at else "-",
            _secs(r.duration_s), _secs(d.get("download")), _secs(d.get("placement_group")),
            _secs(d.get("engine_init")),
            render.plain(r.current_phase or "") if r.outcome in ("running", "abandoned") else "",
            render.plain(where),
        ))
    console.print(render.fitted_table("initializations", _LIST_COLS, rows, console.width))


def _node_lines(step: Tree, r: ReplayedInitialization, t0: datetime | None, total: float,
                width: int) -> None:
    """One line per node the download reported on: its bar (from its last report back by
    its own seconds), where it ran, what it has in place, and how it ended."""
    for node_id, d in r.nodes.items():
        done = d.get("stage") == "node_completed"
        seconds = float(d.get("seconds") or 0.0) if done else None
        at: datetime = d["at"]
        begin = at - timedelta(seconds=seconds or 0.0)
        offset = (begin - t0).total_seconds() if t0 else 0.0
        start_col = min(width - 1, int(width * offset / total))
        bar_len = max(1, int(width * (seconds or 0.0) / total))
        bar = " " * start_col + "▒" * min(bar_len, width - start_col)
        here = " this node" if node_id == r.labels.get("node_id") else ""
        files = f"{d.get('files_done', 0)}/{d.get('files_total', 0)} files"
        size = f"{_bytes(d.get('bytes_done'))}/{_bytes(d.get('bytes_total'))}"
        ran_in = f" [dim]({_shown(d['ran_in'])})[/]" if d.get("ran_in") else ""
        line = (f"{bar:<{width}} +{_secs(offset):>9} {_secs(seconds):>9}  node "
                f"{_shown(node_id[:12])}{here}{ran_in} {files} {size}")
        if not done:
            style = "yellow" if r.outcome == "running" else "red"
            line += f" [{style}]{d.get('stage')}, unfinished[/]"
        step.add(line)


def _bytes(value: object) -> str:
    n = float(value) if isinstance(value, int | float) else 0.0
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


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
            _warn(f"{disagreement}; showing the log (run llm-init check)")
        return found

    r = _with_store(store, replayed)
    if as_json:
        print(json.dumps({**_summary(r), "timeline": [
            {"kind": e.kind, "phase": e.phase, "name": e.name, "actor": e.actor,
             "started_at": e.started_at.isoformat(), "duration_s": e.duration_s,
             "status": e.status, "detail": e.detail} for e in r.timeline]}))
        return
    t0 = r.started_at
    seen = (r.last_event_at - t0).total_seconds() if r.last_event_at and t0 else 0.0
    total = max(r.duration_s or seen, 1e-9)  # unfinished: bars scaled to its last event
    head = (f"[bold]{_shown(r.init_id, None)}[/] {_shown(r.model_id, None)} "
            f"[{_STATUS_STYLE.get(r.outcome, '')}]{r.outcome}[/] in {_secs(r.duration_s)}")
    if r.trace_id:
        head += f"  trace {r.trace_id}"
        template = os.environ.get(TRACE_URL_ENV)
        if template:
            head += f"  {template.replace('{trace_id}', r.trace_id)}"
    tree = Tree(head)
    if r.scheduling_s is not None or r.boot_s is not None:
        tree.add(f"[dim]before it: scheduling {_secs(r.scheduling_s)} (deploy request to "
                 f"replica process), replica boot {_secs(r.boot_s)} (process start, imports, "
                 f"constructor); start-up in all {_secs(r.startup_s)}[/]")
    branch = tree
    width = 30
    for e in r.timeline:
        offset = (e.started_at - t0).total_seconds() if t0 else 0.0
        start_col = min(width - 1, int(width * offset / total))
        bar_len = max(1, int(width * (e.duration_s or 0.0) / total))
        bar = " " * start_col + "█" * min(bar_len, width - start_col)
        style = _STATUS_STYLE.get(e.status, "")
        label = _shown(e.name, None) if e.kind == "phase" else f"{e.kind} {_shown(e.name, None)}"
        if e.actor:
            label += f" [dim]({_shown(e.actor, None)})[/]"
        line = (f"[{style}]{bar:<{width}}[/] +{_secs(offset):>9} {_secs(e.duration_s):>9}  "
                f"{label}")
        if e.status in ("skipped", "failed", "abandoned"):
            line += f" [{style}]{e.status.upper()}[/] {_shown(e.detail, None)}"
        if spans and e.span_id:
            line += f" [dim]span {e.span_id}[/]"
        if e.kind == "phase":
            branch = tree.add(line)
        elif e.kind == "step" and e.name == "download" and r.nodes:
            _node_lines(branch.add(line), r, t0, total, width)
        else:
            branch.add(line)
    if r.error:
        what = "[bold magenta]abandoned:[/]" if r.outcome == "abandoned" else "[bold red]error:[/]"
        tree.add(f"{what} {_shown(r.error, None)}")
    if r.warm_start:
        tree.add(_warm_start_line(r.warm_start))
    if r.ready_s is not None:
        tree.add(f"[dim]after it: Serve readiness {_secs(r.ready_s)} (to the replica's first "
                 f"passed health check)[/]")
    console.print(tree)


@app.command()
def events(init_id: str, store: StoreOption = None,
           as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
           span: Annotated[str | None, typer.Option(
               "--span", help="Only the events emitted under this span id (from a trace)")]
           = None) -> None:
    """The recorded events of one initialization, as a table or JSON lines."""
    evs = _with_store(store, lambda s: read_events(s, resolve_init_id(s, init_id)))
    if span is not None:
        evs = [e for e in evs if e.span_id == span.lower()]
        if not evs:
            raise _fail(f"no event of {init_id} was emitted under span {span}")
    if as_json:
        for e in evs:
            rec = encode(e)
            print(json.dumps({"init_id": rec.init_id, "sequence": rec.sequence, "type": rec.topic,
                              "schema_version": rec.schema_version, "timestamp": rec.timestamp,
                              **json.loads(rec.state)}))
        return
    rows = []
    for e in evs:
        rec = json.loads(encode(e).state)
        what = " ".join(f"{k}={v}" for k, v in rec.items()
                        if k not in ("phase", "trace_id", "span_id", "node_id", "config",
                                     "context") and v not in (None, "", [], {}))
        rows.append((str(e.sequence), e.timestamp.strftime("%H:%M:%S.%f")[:-3], e.TYPE,
                     render.plain(rec.get("phase", "")), escape(printable(what, None)[:120])))
    console.print(render.fitted_table(f"events of {evs[0].init_id}", _EVENT_COLS, rows,
                                      console.width))


@app.command("replay")
def replay_cmd(init_id: str, store: StoreOption = None,
               at: Annotated[int | None, typer.Option("--at", help="Sequence number")] = None,
               ) -> None:
    """The context as it stood after event SEQ (default: the last event), as JSON."""
    def at_event(s: EventStore) -> ReplayedInitialization:
        events = read_events(s, resolve_init_id(s, init_id))
        first, last = events[0].sequence, events[-1].sequence
        if at is not None and not first <= at <= last:
            raise _fail(f"--at {at} is out of range: {events[0].init_id} has events "
                        f"{first}..{last}")
        return replay(events, at)

    r = _with_store(store, at_event)
    print(json.dumps({"init_id": r.init_id, "sequence": r.last_sequence, "outcome": r.outcome,
                      "phase": r.current_phase, "context": r.state}, indent=2))


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
    console.print(render.diff_view(d))


@app.command()
def stats(store: StoreOption = None, as_json: JsonOption = False,
          model: Model = None, since: Since = None, until: Until = None,
          outcome: Outcome = None, host: Host = None, node: Node = None,
          application: Application = None, deployment: Deployment = None,
          label: Label = None) -> None:
    """p50/p95/p99 of each phase (and of whole inits) over the matching inits, computed from
    the recorded PhaseCompleted and InitializationCompleted events."""
    query = _query(model, since, until, outcome, host, node, application, deployment, label,
                   limit=None)
    found = _with_store(store, lambda s: fleet.phase_stats(s, query))
    if as_json:
        print(json.dumps([p.to_dict() for p in found]))
        return
    title = f"phase durations{' of ' + model if model else ''}"
    console.print(render.stats_table(found, title, console.width))


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
    query = _query(model, since, None, None, host, node, application, deployment, label)
    if not follow:
        now = datetime.now(UTC)
        def disagrees(st: fleet.InitStatus) -> None:
            _warn(f"{st.init_id}: the index says running but the log says {st.outcome}; "
                  "left out (run llm-init check)")

        running = _with_store(store, lambda s: fleet.fleet_status(
            s, query, on_disagreement=disagrees))
        if as_json:
            for st in running:
                print(json.dumps(st.to_dict(now)))
            return
        console.print(render.status_table(running, now, f"{len(running)} in progress",
                                          console.width))
        return

    def follow_in(s: EventStore) -> None:
        follower = fleet.FleetFollower(s, query)
        if as_json:
            def emit(_: list[fleet.InitStatus], changed: list[fleet.InitStatus]) -> None:
                now = datetime.now(UTC)
                for st in changed:
                    print(json.dumps(st.to_dict(now)), flush=True)

            follower.follow(emit, timeout_s=timeout)
            return
        with Live(console=console, auto_refresh=False) as live:
            def show(running: list[fleet.InitStatus], _: list[fleet.InitStatus]) -> None:
                now = datetime.now(UTC)
                title = f"{len(running)} in progress  (following; {now:%H:%M:%S} UTC)"
                live.update(render.status_table(running, now, title, console.width),
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
        raise _fail("name init ids, give filters, or pass --all")
    query = _query(model, since, until, outcome, host, node, application, deployment, label,
                   limit=None)

    def lines(s: EventStore) -> int:
        ids = ([resolve_init_id(s, i) for i in init_ids] if init_ids
               else fleet.query_initializations(s, query))
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
        raise _fail(str(exc)) from None
    try:
        if source == "-":
            result = fleet.import_lines(target, sys.stdin.buffer)
        else:
            # Bytes: a line that is not UTF-8 is reported by its number, not a traceback.
            with open(source, "rb") as lines:
                result = fleet.import_lines(target, lines)
    except OSError as exc:
        raise _fail(f"cannot read {source}: {exc.strerror}") from None
    except LLMInitError as exc:
        raise _fail(str(exc)) from None
    finally:
        target.close()
    if as_json:
        print(json.dumps({"imported": result.imported, "unchanged": result.unchanged}))
        return
    console.print(f"imported {sum(result.imported.values())} events of "
                  f"{len(result.imported)} initializations; {len(result.unchanged)} already "
                  f"present unchanged", highlight=False)


@app.command()
def check(store: StoreOption = None,
          as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False) -> None:
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


def _warm_start_line(warm: dict[str, Any]) -> str:
    """The timeline's warm-start line: hit or miss (and why), then what was published."""
    if warm.get("result") == "hit":
        line = (f"[green]warm start: HIT[/] artifact {_shown(warm.get('key'))} "
                f"({warm.get('bytes', 0) / 1e6:.1f} MB restored in {_secs(warm.get('seconds'))})")
    elif warm.get("result") == "miss":
        line = (f"[yellow]warm start: MISS[/] ({_shown(warm.get('reason'))}) artifact "
                f"{_shown(warm.get('key'))} in {_secs(warm.get('seconds'))}")
        differs = warm.get("differs") or {}
        if differs:  # what the store's nearest artifact of this model was made with
            line += "; nearest differs: " + ", ".join(
                f"{_shown(k)} {_shown(v[0] or '-')} -> {_shown(v[1] or '-')}"
                for k, v in list(differs.items())[:3])
    else:
        line = "warm start:"
    vllm = warm.get("vllm")
    if vllm is not None:  # what vLLM did with its compile cache, from its log lines
        use = CacheUse(**{k: v for k, v in vllm.items() if k != "restored"}).describe()
        if warm.get("used"):
            line += f"; used by vLLM ({use})"
        elif warm.get("result") == "hit":  # files in place that vLLM ignored: a hidden miss
            line = line.replace("[green]warm start: HIT[/]",
                                f"[red]warm start: HIT, unused by vLLM[/] ({use})", 1)
        else:
            line += f"; vLLM: {use}"
    published = warm.get("published")
    if published:
        line += (f"; published {published.get('bytes', 0) / 1e6:.1f} MB in "
                 f"{_secs(published.get('seconds'))}" if published["result"] == "published"
                 else f"; not published ({_shown(published.get('reason'))})")
    return line


def _shown(value: object, limit: int | None = 120) -> str:
    """A recorded value in Rich markup: it may come from an artifact store, a peer or a
    failing library (untrusted text), so it is one printable line, capped at ``limit``
    characters, and never taken as markup."""
    return render.plain(value, limit)


def _summary(r: ReplayedInitialization) -> dict[str, Any]:
    return {"init_id": r.init_id, "model_id": r.model_id, "outcome": r.outcome,
            "started_at": r.started_at.isoformat() if r.started_at else None,
            "duration_s": r.duration_s, "phases": r.phase_durations,
            "current_phase": r.current_phase, "error": r.error, "labels": r.labels,
            "launch": {"scheduling_s": r.scheduling_s, "boot_s": r.boot_s,
                       "ready_s": r.ready_s, "startup_s": r.startup_s},
            "warm_start": r.warm_start}


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
