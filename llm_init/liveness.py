"""When an unfinished initialization counts as abandoned, and whether a process still runs.

An initialization declares its heartbeat interval in ``InitializationStarted`` and records a
``HeartbeatRecorded`` event every interval while it runs (``llm_init.heartbeat``). Readers
(replay, the stores' fleet queries, the CLI) call an unfinished one **abandoned** once its last
heartbeat, or its start when it has none yet, is older than ``ABANDON_AFTER_BEATS`` intervals:
15 s with the default 5 s interval. Until then, and for logs that declare no interval (written
with heartbeats off, or by an llm-init from before them), it is running.

The judgement compares the writer's clock (event timestamps) with the reader's: clocks more than
a few seconds apart shift it by their difference.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path

from llm_init.errors import LLMInitError
from llm_init.telemetry import names

ABANDON_AFTER_BEATS = 3
# Slack for reading a process's start time (the boot time in /proc/stat has whole seconds).
_START_SLACK = timedelta(seconds=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class HeartbeatConfigError(LLMInitError, ValueError):
    """The heartbeat interval is not a usable number of seconds."""


def heartbeat_interval(value: float | None = None,
                       environ: Mapping[str, str] = os.environ) -> float:
    """``value``, else ``$LLM_INIT_HEARTBEAT_INTERVAL_S``, else 5 s; 0 turns heartbeats off."""
    source = "heartbeat_interval_s"
    if value is None:
        text = environ.get(names.ENV_HEARTBEAT_INTERVAL, "").strip()
        if not text:
            return names.DEFAULT_HEARTBEAT_INTERVAL_S
        source = names.ENV_HEARTBEAT_INTERVAL
        try:
            value = float(text)
        except ValueError:
            raise HeartbeatConfigError(
                f"{source}={text!r} is not a number of seconds (0 turns heartbeats off)"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value < 0:
        raise HeartbeatConfigError(
            f"{source} must be a finite number of seconds >= 0 (0 turns heartbeats off), "
            f"got {value!r}")
    return float(value)


def abandon_after(interval_s: float) -> timedelta:
    """How long an initialization with this heartbeat interval may stay silent."""
    return timedelta(seconds=ABANDON_AFTER_BEATS * interval_s)


def alive_until(last_beat: datetime, interval_s: float | None) -> datetime | None:
    """The time after which an unfinished init last heard of at ``last_beat`` is abandoned;
    ``None`` (never by time) when it declared no heartbeat."""
    if not interval_s or interval_s <= 0:
        return None
    return last_beat + abandon_after(interval_s)


def process_alive(pid: int, started_before: datetime) -> bool:
    """Whether process ``pid`` of this host may be the one that started an initialization at
    ``started_before``: it exists, is no zombie, and did not start later (a reused pid)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, as another user's process
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc: existence is all that can be known
    state, start_ticks = stat
    if state in ("Z", "X"):
        return False
    started = _process_start(start_ticks)
    return started is None or started <= started_before + _START_SLACK


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """The state letter and start time (clock ticks after boot) from ``/proc/PID/stat``."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses.
    fields = text[text.rfind(")") + 2:].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _process_start(start_ticks: int) -> datetime | None:
    try:
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError):
        return None
    return datetime.fromtimestamp(boot + start_ticks / ticks, UTC)
