"""When the process that runs an initialization started, and when its deploy was asked for.

A Serve replica spends time before llm-init runs: waiting to be scheduled, starting a worker
process, importing Ray Serve LLM and vLLM, constructing the replica. ``ReplicaLaunch`` carries
the two instants that bound that time, and the runtime records them as a ``ReplicaLaunched``
event, so a timeline explains the whole start-up and not only the initialization.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReplicaLaunch:
    """Unix times: when the application was built (the deploy request), and when this
    process started. Either may be unknown."""

    app_built_at: float | None = None
    process_started_at: float | None = None

    def segments(self, now: float) -> tuple[float | None, float | None]:
        """``(scheduling_s, boot_s)`` at ``now``. A process older than the build (a worker
        started ahead of time) was not waiting for this deploy, so its boot counts from the
        build and its scheduling is zero."""
        built, started = self.app_built_at, self.process_started_at
        if started is None:
            return None, (now - built if built is not None else None)
        if built is None:
            return None, now - started
        return max(0.0, started - built), now - max(started, built)


def process_started_at(pid: int | None = None) -> float | None:
    """The Unix time a process started, to about 10 ms, from ``/proc`` (None elsewhere).

    ``/proc/uptime`` and the start tick in ``/proc/PID/stat`` share the boot clock, which avoids
    ``btime``'s whole-second rounding."""
    try:
        with open(f"/proc/{pid or os.getpid()}/stat", encoding="ascii") as stat:
            # The command name (field 2) may hold spaces: count fields after its ')'.
            fields = stat.read().rpartition(")")[2].split()
        with open("/proc/uptime", encoding="ascii") as uptime:
            up = float(uptime.read().split()[0])
        now = time.time()
        ticks = int(fields[19])  # field 22, starttime
        return now - (up - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
