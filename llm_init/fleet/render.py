"""Rich tables for the fleet commands of the CLI."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from rich.console import Group
from rich.table import Table

from llm_init.fleet.diff import InitDiff
from llm_init.fleet.stats import PhaseStats
from llm_init.fleet.status import InitStatus

STATUS_STYLE = {"completed": "green", "failed": "bold red", "skipped": "yellow",
                "running": "cyan"}


def secs(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s" if abs(value) < 120 else f"{value / 60:.1f} min"


def status_table(statuses: list[InitStatus], now: datetime, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("init id", "model", "application", "deployment", "node / host", "phase",
                "now running", "elapsed", "last event"):
        table.add_column(col)
    for s in statuses:
        where = s.labels.get("node_id") or s.host or "-"
        table.add_row(
            s.init_id[:12], s.model_id, s.labels.get("application", "-"),
            s.labels.get("deployment", "-"), where[:16],
            f"[{STATUS_STYLE.get(s.outcome, '')}]{s.phase or '-'}[/]", s.activity or "",
            secs(s.elapsed_s(now)), f"{secs((now - s.last_event_at).total_seconds())} ago",
        )
    return table


def stats_table(stats: list[PhaseStats], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("phase", "n", "p50", "p95", "p99", "mean", "max"):
        table.add_column(col, justify="left" if col == "phase" else "right")
    for s in stats:
        table.add_row(s.phase, str(s.count), secs(s.p50), secs(s.p95), secs(s.p99),
                      secs(s.mean), secs(s.max))
    return table


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
        label = f"[bold]{t.name}[/]" if t.kind in ("init", "phase") else f"{indent}{t.name}"
        times.add_row(label, secs(t.a_s), secs(t.b_s),
                      f"[{style}]{'+' if (delta or 0) > 0 else ''}{secs(delta)}[/]"
                      if style else (("+" if (delta or 0) > 0 else "") + secs(delta)), ratio)
    values = Table(title="differences", title_justify="left")
    for col in ("section", "path", "A", "B"):
        values.add_column(col, overflow="fold")
    for v in d.values:
        values.add_row(v.section, v.path, _short(v.a), _short(v.b))
    if not d.values:
        values.add_row("-", "no differences", "", "")
    return Group(times, values)


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[:width - 1] + "…"
