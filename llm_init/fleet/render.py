"""Rich tables for the fleet commands of the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from rich.console import Group
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from llm_init.fleet.diff import InitDiff
from llm_init.fleet.stats import PhaseStats
from llm_init.fleet.status import InitStatus
from llm_init.text import printable

STATUS_STYLE = {"completed": "green", "failed": "bold red", "skipped": "yellow",
                "running": "cyan", "abandoned": "magenta"}


def secs(value: float | None) -> str:
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
    rows = [(plain(s.phase), str(s.count), secs(s.p50), secs(s.p95), secs(s.p99), secs(s.mean),
             secs(s.max)) for s in stats]
    return fitted_table(title, STATS_COLS, rows, width)


def diff_view(d: InitDiff) -> Group:
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
