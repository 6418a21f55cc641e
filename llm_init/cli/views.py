"""What the CLI shows: pure functions from a replay or a query to a renderable or a dict.

What the CLI shows: pure functions from a replayed initialization or a query's result to a
Rich renderable or a JSON-ready dict. Commands print them; the demo prints them too.

Every value that came from a log, a store or a peer is shown through ``plain``: it may hold
escape sequences, newlines or Rich markup.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from rich.console import Group
from rich.highlighter import ReprHighlighter
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from llm_init.artifacts import catalog
from llm_init.artifacts.catalog import ArtifactEntry, PruneReport
from llm_init.artifacts.manifest import Manifest
from llm_init.events import Event
from llm_init.fleet.diff import InitDiff
from llm_init.fleet.stats import PhaseStats
from llm_init.fleet.status import InitStatus
from llm_init.fleet.transfer import record_dict
from llm_init.fleet.weights import WeightStats
from llm_init.replay import ReplayedInitialization
from llm_init.steps.vllm_cache_use import CacheUse
from llm_init.stores import encode
from llm_init.text import printable

# The one colour of each outcome and status, in every table and waterfall.
STATUS_STYLE = {"completed": "green", "failed": "bold red", "skipped": "yellow",
                "running": "cyan", "abandoned": "magenta"}


def secs(value: float | None) -> str:
    """A duration as people read it: milliseconds below a second, minutes from two on."""
    if value is None:
        return "-"
    if abs(value) < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s" if abs(value) < 120 else f"{value / 60:.1f} min"


@dataclass(frozen=True, slots=True)
class Col:
    """A table column and how it gives way on a narrow console: columns with the highest
    ``drop`` go first (0: never dropped); ``fold`` columns wrap their text instead of keeping
    it on one line, and count as at most ``room`` cells when deciding what fits."""

    header: str
    drop: int = 0
    fold: bool = False
    room: int = 24
    justify: Literal["left", "right"] = "left"


def fitted_table(title: str, cols: Sequence[Col], rows: Sequence[Sequence[str]],
                 width: int | None = None) -> Table:
    """A table of ``rows`` that fits ``width`` cells (``None``: no limit): the least important
    columns are dropped until the rest fit, and the caption names them. Kept columns that do
    not fold are never cut: ids and outcomes are handles for other commands."""
    natural = [max([_cells(c.header)] + [_cells(r[i]) for r in rows])
               for i, c in enumerate(cols)]
    kept = list(range(len(cols)))

    def needed() -> int:
        return sum(min(natural[i], cols[i].room) if cols[i].fold else natural[i]
                   for i in kept) + 3 * len(kept) + 1

    while width is not None and needed() > width and any(cols[i].drop for i in kept):
        kept.remove(max(kept, key=lambda i: cols[i].drop))
    hidden = [c.header for i, c in enumerate(cols) if i not in kept]
    table = Table(title=title, title_justify="left",
                  caption=(f"not shown at {width} columns: {', '.join(hidden)} (widen the "
                           f"terminal or use --json)" if hidden else None),
                  caption_justify="left")
    for i in kept:
        c = cols[i]
        if c.fold:
            table.add_column(c.header, justify=c.justify, overflow="fold")
        else:
            table.add_column(c.header, justify=c.justify, no_wrap=True, min_width=natural[i])
    for r in rows:
        table.add_row(*(r[i] for i in kept))
    return table


def plain(value: object, limit: int | None = None) -> str:
    """A recorded value as Rich markup that shows it as text: one printable line (capped at
    ``limit`` characters), never read as markup. Anything a replica, a store or a library
    wrote can hold escape sequences, newlines or ``[/]``."""
    return escape(printable(value, limit))


def _cells(markup: str) -> int:
    return Text.from_markup(markup).cell_len


STATUS_COLS = (Col("init id"), Col("model", fold=True), Col("application", 6),
               Col("deployment", 7), Col("node / host", 8), Col("phase"),
               Col("now running", 4, fold=True), Col("elapsed", 1), Col("last event", 5))


def status_table(statuses: list[InitStatus], now: datetime, title: str,
                 width: int | None = None) -> Table:
    """``llm-init status``: one row per initialization in progress."""
    rows = []
    for s in statuses:
        where = s.labels.get("node_id") or s.host or "-"
        rows.append((
            plain(s.init_id[:12]), plain(s.model_id), plain(s.labels.get("application", "-")),
            plain(s.labels.get("deployment", "-")), plain(where[:16]),
            f"[{STATUS_STYLE.get(s.outcome, '')}]{plain(s.phase or '-')}[/]",
            plain(s.activity or ""),
            secs(s.elapsed_s(now)), f"{secs((now - s.last_event_at).total_seconds())} ago",
        ))
    return fitted_table(title, STATUS_COLS, rows, width)


STATS_COLS = (Col("phase"), Col("n", 1, justify="right"), Col("p50", justify="right"),
              Col("p95", 3, justify="right"), Col("p99", 2, justify="right"),
              Col("mean", 5, justify="right"), Col("max", 4, justify="right"))


def stats_table(stats: list[PhaseStats], title: str, width: int | None = None) -> Table:
    """``llm-init stats``: the percentiles of each phase."""
    rows = [(plain(s.phase), str(s.count), secs(s.p50), secs(s.p95), secs(s.p99), secs(s.mean),
             secs(s.max)) for s in stats]
    return fitted_table(title, STATS_COLS, rows, width)


WEIGHT_STATS_COLS = (Col("model"), Col("phase", 2), Col("n", 1, justify="right"),
                     Col("p50", justify="right"), Col("p95", 3, justify="right"))


def weight_stats_table(stats: Sequence[WeightStats], width: int | None = None) -> Table:
    """``llm-init stats --weights``: weight throughput percentiles per model and phase."""
    rows = [(plain(s.model), plain(s.phase), str(s.count), rate(s.p50_bytes_per_s),
             rate(s.p95_bytes_per_s)) for s in stats]
    return fitted_table("weight throughput", WEIGHT_STATS_COLS, rows, width)


def diff_view(d: InitDiff) -> Group:
    """``llm-init diff``: time per phase, step and hook, then every value that differs."""
    times = Table(title=f"time: A={d.a[:12]}  B={d.b[:12]}", title_justify="left")
    for col in ("what", "A", "B", "B - A", "B / A"):
        times.add_column(col, justify="left" if col == "what" else "right")
    for t in d.times:
        indent = {"init": "", "phase": "", "step": "  step ", "hook": "  hook ",
                  "subphase": "  vLLM "}[t.kind]
        delta = t.delta_s
        ratio = (f"{t.b_s / t.a_s:.2f}x" if t.a_s and t.b_s is not None else "-")
        style = ("red" if delta is not None and delta > 0.1 * max(t.a_s or 0, 1e-3)
                 else "green" if delta is not None and delta < -0.1 * max(t.a_s or 0, 1e-3)
                 else "")
        name = plain(t.name)
        label = f"[bold]{name}[/]" if t.kind in ("init", "phase") else f"{indent}{name}"
        times.add_row(label, secs(t.a_s), secs(t.b_s),
                      f"[{style}]{'+' if (delta or 0) > 0 else ''}{secs(delta)}[/]"
                      if style else (("+" if (delta or 0) > 0 else "") + secs(delta)), ratio)
    values = Table(title="differences", title_justify="left")
    for col in ("section", "path", "A", "B"):
        values.add_column(col, overflow="fold")
    for v in d.values:
        values.add_row(plain(v.section), plain(v.path), plain(_short(v.a)),
                       plain(_short(v.b)))
    if not d.values:
        values.add_row("-", "no differences", "", "")
    return Group(times, values)


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[:width - 1] + "…"


# On a narrow console (80 columns, or a pipe) the least important columns go first; the init
# id, the handle for every other command, is never cut.
LIST_COLS = (Col("init id"), Col("model", fold=True), Col("outcome"), Col("started (UTC)", 5),
             Col("total", 1), Col("download", 4), Col("placement", 6), Col("engine", 3),
             Col("phase now", 2), Col("host", 7))
EVENT_COLS = (Col("seq"), Col("time (UTC)", 2), Col("type"), Col("phase", 1),
              Col("what", fold=True, room=20))
# Fields of an event that the events table leaves out of its "what" column: they have their
# own column, or are too long for a table (``--json`` has them).
_NOT_IN_WHAT = ("phase", "trace_id", "span_id", "node_id", "config", "context")


def outcome(value: str) -> str:
    """An outcome or status in its colour (markup)."""
    return f"[{STATUS_STYLE.get(value, '')}]{plain(value)}[/]"


def list_table(inits: Sequence[ReplayedInitialization], width: int | None = None) -> Table:
    """``llm-init list``: one row per initialization, newest (or slowest) first."""
    rows = []
    for r in inits:
        d = r.phase_durations
        rows.append((
            plain(r.init_id[:12]), plain(r.model_id), outcome(r.outcome),
            r.started_at.strftime("%Y-%m-%d %H:%M:%S") if r.started_at else "-",
            secs(r.duration_s), secs(d.get("download")), secs(d.get("placement_group")),
            secs(d.get("engine_init")),
            plain(r.current_phase or "") if r.outcome in ("running", "abandoned") else "",
            plain(r.host),
        ))
    return fitted_table("initializations", LIST_COLS, rows, width)


def event_dict(event: Event) -> dict[str, Any]:
    """The one JSON shape of a recorded event, as ``export`` writes it, ``import`` reads it and
    ``events --json`` prints it: ``init_id``, ``sequence``, ``type``, ``schema_version``,
    ``timestamp`` and ``data``, the event's own fields."""
    return record_dict(encode(event))


def event_line(event: Event) -> dict[str, Any]:
    """``events --flat``: the event's shape with its fields beside the envelope instead of
    under ``data``, as ``events --json`` printed it before it took ``event_dict``'s shape."""
    shaped = event_dict(event)
    return {**{k: v for k, v in shaped.items() if k != "data"}, **shaped["data"]}


def events_table(events: Sequence[Event], width: int | None = None) -> Table:
    """``llm-init events``: one row per event, its fields in short."""
    rows = []
    for e in events:
        rec = event_dict(e)["data"]
        what = " ".join(f"{k}={v}" for k, v in rec.items()
                        if k not in _NOT_IN_WHAT and v not in (None, "", [], {}))
        rows.append((str(e.sequence), e.timestamp.strftime("%H:%M:%S.%f")[:-3], e.TYPE,
                     plain(rec.get("phase", "")), escape(printable(what, None)[:120])))
    return fitted_table(f"events of {events[0].init_id}", EVENT_COLS, rows, width)


def summary(r: ReplayedInitialization) -> dict[str, Any]:
    """An initialization in short, for ``list --json`` and ``timeline --json``."""
    return {"init_id": r.init_id, "model_id": r.model_id, "outcome": r.outcome,
            "started_at": r.started_at.isoformat() if r.started_at else None,
            "duration_s": r.duration_s, "phases": r.phase_durations,
            "current_phase": r.current_phase, "error": r.error, "labels": r.labels,
            "launch": {"scheduling_s": r.scheduling_s, "boot_s": r.boot_s,
                       "ready_s": r.ready_s, "startup_s": r.startup_s},
            "warm_start": r.warm_start}


def list_line(r: ReplayedInitialization) -> dict[str, Any]:
    """``list --json``: the summary and the host it ran on."""
    return {**summary(r), "host": r.host}


def timeline_dict(r: ReplayedInitialization) -> dict[str, Any]:
    """``timeline --json``: the summary and every timeline entry; ``overlap`` (the seconds an
    overlapped start's download ran beside the later phases) and ``weights`` (the engine's weight
    transfers, one per worker) when there were any."""
    overlap = {} if r.overlapped_s is None else {"overlap": {"saved_s": r.overlapped_s}}
    out = {**summary(r), **overlap, "timeline": [
        {"kind": e.kind, "phase": e.phase, "name": e.name, "actor": e.actor,
         "started_at": e.started_at.isoformat(), "duration_s": e.duration_s,
         "status": e.status, "detail": e.detail} for e in r.timeline]}
    if r.weights:
        out["weights"] = [dict(w) for w in r.weights]
    return out


def replay_dict(r: ReplayedInitialization) -> dict[str, Any]:
    """``llm-init replay``: the context as it stood after the last replayed event."""
    return {"init_id": r.init_id, "sequence": r.last_sequence, "outcome": r.outcome,
            "phase": r.current_phase, "context": r.state}


_BAR = 30  # cells of a waterfall bar
_GUIDE = 4  # cells a tree level indents its children by


def timeline_tree(r: ReplayedInitialization, *, spans: bool = False,
                  trace_url: str | None = None, width: int | None = None) -> Tree:
    """``llm-init timeline``: a waterfall of phases, steps and hook calls with durations.

    ``trace_url`` is a template with ``{trace_id}``; ``width`` is the console's, so that a
    long entry breaks between its values rather than inside one (``None``: never breaks)."""
    t0 = r.started_at
    seen = (r.last_event_at - t0).total_seconds() if r.last_event_at and t0 else 0.0
    total = max(r.duration_s or seen, 1e-9)  # unfinished: bars scaled to its last event
    head = f"[bold]{plain(r.init_id)}[/] {plain(r.model_id)} {outcome(r.outcome)} in " \
           f"{secs(r.duration_s)}"
    if r.trace_id:
        head += f"  trace {r.trace_id}"
        if trace_url:
            head += f"  {plain(trace_url.replace('{trace_id}', r.trace_id))}"
    tree = Tree(head)
    if r.scheduling_s is not None or r.boot_s is not None:
        tree.add(f"[dim]before it: scheduling {secs(r.scheduling_s)} (deploy request to "
                 f"replica process), replica boot {secs(r.boot_s)} (process start, imports, "
                 f"constructor); start-up in all {secs(r.startup_s)}[/]")
    branch = tree
    branches: dict[str, Tree] = {}  # an overlapped start's download ends inside later phases
    for e in r.timeline:
        offset = (e.started_at - t0).total_seconds() if t0 else 0.0
        style = STATUS_STYLE.get(e.status, "")
        parts = [f"[{style}]{_bar(offset, e.duration_s, total, '█')}[/] +{secs(offset):>9} "
                 f"{secs(e.duration_s):>9} ",
                 plain(e.name) if e.kind == "phase" else f"{e.kind} {plain(e.name)}"]
        if e.actor:
            parts.append(f"[dim]({plain(e.actor)})[/]")
        if e.status in ("skipped", "failed", "abandoned"):
            parts.append(f"[{style}]{e.status.upper()}[/] {plain(e.detail)}")
        if spans and e.span_id:
            parts.append(f"[dim]span {e.span_id}[/]")
        if e.kind != "phase":
            branch = branches.get(e.phase, branch)
        depth = 1 if e.kind == "phase" or branch is tree else 2
        line = _packed(parts, None if width is None else width - depth * _GUIDE,
                       indent=_BAR + 1)
        if e.kind == "phase":
            branch = branches[e.phase] = tree.add(line)
        elif e.kind == "step" and e.name == "download" and r.nodes:
            _node_lines(branch.add(line), r, t0, total,
                        None if width is None else width - 3 * _GUIDE)
        elif e.kind == "step" and e.name == "engine" and r.weights:
            weight_lines(branch.add(line), r, t0, total,
                         None if width is None else width - 3 * _GUIDE)
        else:
            branch.add(line)
    if r.error:
        what = "[bold magenta]abandoned:[/]" if r.outcome == "abandoned" else "[bold red]error:[/]"
        tree.add(f"{what} {plain(r.error)}")
    if r.warm_start:
        tree.add(warm_start_line(r.warm_start))
    if r.overlapped_s is not None:
        tree.add(overlap_line(r))
    if r.ready_s is not None:
        tree.add(f"[dim]after it: Serve readiness {secs(r.ready_s)} (to the replica's first "
                 f"passed health check)[/]")
    return tree


def overlap_line(r: ReplayedInitialization) -> str:
    """An overlapped start: how long the download ran beside the later phases (the seconds
    the sequential start would have spent more), drawn as the bars above overlap."""
    return (f"[bold]overlap: {secs(r.overlapped_s)} saved[/] [dim](the engine started while "
            f"the weights arrived; the download's bar runs beside placement group and engine "
            f"init)[/]")


def _bar(offset: float, seconds: float | None, total: float, block: str) -> str:
    start_col = min(_BAR - 1, int(_BAR * offset / total))
    bar_len = max(1, int(_BAR * (seconds or 0.0) / total))
    return f"{' ' * start_col + block * min(bar_len, _BAR - start_col):<{_BAR}}"


def _node_lines(step: Tree, r: ReplayedInitialization, t0: datetime | None, total: float,
                width: int | None) -> None:
    """One entry per node the download reported on: its bar (from its last report back by
    its own seconds), where it ran, what it has in place, and how it ended."""
    for node_id, d in r.nodes.items():
        done = d.get("stage") == "node_completed"
        seconds = float(d.get("seconds") or 0.0) if done else None
        at: datetime = d["at"]
        begin = at - timedelta(seconds=seconds or 0.0)
        offset = (begin - t0).total_seconds() if t0 else 0.0
        here = " this node" if node_id == r.labels.get("node_id") else ""
        parts = [f"{_bar(offset, seconds, total, '▒')} +{secs(offset):>9} {secs(seconds):>9} ",
                 f"node {_shown(node_id[:12])}{here}"]
        if d.get("ran_in"):
            parts.append(f"[dim]({_shown(d['ran_in'])})[/]")
        parts.append(f"{d.get('files_done', 0)}/{d.get('files_total', 0)} files")
        parts.append(f"{_bytes(d.get('bytes_done'))}/{_bytes(d.get('bytes_total'))}")
        if not done:
            style = "yellow" if r.outcome == "running" else "red"
            parts.append(f"[{style}]{_shown(d.get('stage'))}, unfinished[/]")
        step.add(_packed(parts, width, indent=_BAR + 1))


def weight_lines(step: Tree, r: ReplayedInitialization, t0: datetime | None, total: float,
                 width: int | None) -> None:
    """The engine's ``weight_loading`` rows, one per worker: its bar (where its log line put
    it), the bytes it loaded and how fast, and from where (the load format)."""
    for w in r.weights:
        seconds = w.get("seconds")
        ended_at = w.get("ended_at")
        offset = 0.0
        if t0 is not None and isinstance(ended_at, int | float):
            offset = max(0.0, ended_at - (seconds or 0.0) - t0.timestamp())
        parts = [f"{_bar(offset, seconds, total, '▒')} +{secs(offset):>9} {secs(seconds):>9} ",
                 "weight_loading"]
        if w.get("worker"):
            parts.append(f"[dim]({_shown(w['worker'])})[/]")
        parts.append(_bytes(w.get("bytes")))
        parts.append(rate(w.get("bytes_per_s")))
        parts.append(f"[dim]{_shown(w.get('load_format'))}[/]")
        step.add(_packed(parts, width, indent=_BAR + 1))


def rate(bytes_per_s: object) -> str:
    """Bytes per second in decimal units, as the sizes: GB/s from 1 GB/s, else MB/s; ``-``
    when unknown."""
    if not isinstance(bytes_per_s, int | float) or isinstance(bytes_per_s, bool):
        return "- GB/s"
    if bytes_per_s >= 1e9:
        return f"{bytes_per_s / 1e9:.2f} GB/s"
    return f"{bytes_per_s / 1e6:.1f} MB/s"


def _packed(parts: Sequence[str], width: int | None, *, indent: int) -> Text:
    """``parts`` (markup) joined by spaces, a line broken only between parts (continuations
    indented by ``indent`` cells): a size or a count is never split over two lines."""
    lines = [Text.from_markup(parts[0])]
    for part in parts[1:]:
        piece = Text.from_markup(part)
        if width is not None and lines[-1].cell_len + 1 + piece.cell_len > width:
            lines.append(Text(" " * min(indent, max(width - piece.cell_len, 0))) + piece)
        else:
            lines[-1] += Text(" ") + piece
    # Highlighted as the console highlights the markup strings of the other lines.
    return _HIGHLIGHT(Text("\n").join(lines))


_HIGHLIGHT = ReprHighlighter()


def _bytes(value: object) -> str:
    n = float(value) if isinstance(value, int | float) else 0.0
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def warm_start_line(warm: dict[str, Any]) -> str:
    """The timeline's warm-start line: hit or miss (and why), then what was published."""
    if warm.get("result") == "hit":
        line = (f"[green]warm start: HIT[/] artifact {_shown(warm.get('key'))} "
                f"({warm.get('bytes', 0) / 1e6:.1f} MB restored in {secs(warm.get('seconds'))})")
    elif warm.get("result") == "miss":
        line = (f"[yellow]warm start: MISS[/] ({_shown(warm.get('reason'))}) artifact "
                f"{_shown(warm.get('key'))} in {secs(warm.get('seconds'))}")
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
                 f"{secs(published.get('seconds'))}" if published["result"] == "published"
                 else f"; not published ({_shown(published.get('reason'))})")
    return line


def _shown(value: object) -> str:
    """A value from an artifact store (untrusted text), capped at 120 characters."""
    return plain(value, 120)


# ``llm-init warm``: artifact names, hosts and parts come from the store, untrusted text, shown
# through ``catalog.printable`` (one line, no control characters) and as ``Text``, not markup.


def age(seconds: float | None) -> str:
    """An artifact's age in its largest unit: ``45s``, ``12.0m``, ``3.5h``, ``2.0d``."""
    if seconds is None:
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def artifacts_table(entries: Sequence[ArtifactEntry], now: float, location: str) -> Table:
    """``warm list``: one row per artifact, an unreadable one with why."""
    table = Table(title=f"artifacts in {location}")
    for column in ("key", "model", "vllm", "age", "archive", "files", "host"):
        table.add_column(column)
    for entry in entries:
        table.add_row(*(Text(value) for value in _artifact_row(entry, now)))
    return table


def _artifact_row(entry: ArtifactEntry, now: float) -> list[str]:
    show = catalog.printable
    if entry.error is not None:
        return [show(entry.key), f"unreadable: {show(entry.error, 60)}", "", "", "", "", ""]
    return [show(entry.key), show(entry.model, 60), show(entry.vllm, 20),
            age(entry.age_s(now)), f"{entry.archive_bytes / 1e6:.1f} MB", str(entry.files),
            show(entry.host, 40)]


def _created(manifest: Manifest) -> str:
    return (datetime.fromtimestamp(manifest.created_at, UTC).isoformat(timespec="seconds")
            if 0 < manifest.created_at < 1e11 else "?")


def artifact_dict(manifest: Manifest) -> dict[str, Any]:
    """``warm inspect --json``: the manifest's key, parts, archive and files."""
    show = catalog.printable
    return {"key": show(manifest.key), "created_at": _created(manifest),
            "host": show(manifest.host), "archive": show(manifest.archive),
            "archive_bytes": manifest.archive_bytes, "size": manifest.size,
            "parts": {show(k): show(v) for k, v in manifest.parts.items()},
            "files": [[show(f.path), f.size] for f in manifest.files]}


def artifact_text(manifest: Manifest, location: str) -> str:
    """``warm inspect``: the manifest as lines of plain text."""
    show = catalog.printable
    lines = [f"artifact {show(manifest.key)} in {location}",
             f"created {_created(manifest)} on {show(manifest.host) or '?'}",
             f"archive {show(manifest.archive)}: {manifest.archive_bytes} bytes; "
             f"{len(manifest.files)} files, {manifest.size} bytes unpacked", "parts:"]
    lines += [f"  {show(k, 40)} = {show(v)}" for k, v in sorted(manifest.parts.items())]
    lines.append("files:")
    lines += [f"  {f.size:>12}  {show(f.path)}" for f in manifest.files]
    return "\n".join(lines)


def prune_dict(report: PruneReport, now: float, *, dry_run: bool) -> dict[str, Any]:
    """``warm prune --json``: what was (or would be) retired, deleted, kept, waiting."""
    show = catalog.printable
    return {"dry_run": dry_run, "pruned": [e.to_dict(now) for e in report.pruned],
            "deleted": [show(n) for n in report.deleted],
            "kept": [show(n) for n in report.kept],
            "waiting": [show(k) for k in report.waiting]}


def prune_lines(report: PruneReport, now: float, *, dry_run: bool) -> list[str]:
    """``warm prune``: one line per artifact retired or deleted, then what is waiting."""
    show = catalog.printable
    verb = "would retire" if dry_run else "retired"
    lines = [f"{verb} {show(e.key)} ({show(e.model, 60)}, vllm {show(e.vllm, 20)}, "
             f"{age(e.age_s(now))} old)" for e in report.pruned]
    verb = "would delete" if dry_run else "deleted"
    lines += [f"{verb} {show(name)} (grace period over)" for name in report.deleted]
    lines += [f"kept {show(name)} (published again since)" for name in report.kept]
    if report.waiting:
        lines.append(f"{len(report.waiting)} retired artifact(s) within their grace period")
    if not (report.pruned or report.deleted or report.waiting):
        lines.append("nothing to prune")
    return lines

