"""Serve start-up, side by side: llm-init against Ray Serve LLM's own, and llm-init's telemetry
on against off.

    python benchmarks/serve_startup.py [--rounds 3] [--arms ray,llm-init,llm-init-off]

One local Ray cluster; each round deploys the same tiny random-weight Llama (same engine
arguments, same placement, same environment) once per arm, in turn, and deletes it again:

- ``ray``: ``ray.serve.llm.build_openai_app``, Ray Serve LLM's built-in initialization;
- ``llm-init``: ``llm_init.serve.build_openai_app`` fully instrumented: events in SQLite, spans
  exported over OTLP/HTTP to a receiver on loopback, metrics through Ray's pipeline, logs;
- ``llm-init-off``: the same with telemetry off (events in memory, no tracing, no metrics);
- ``llm-init-ray-layout`` (opt-in): fully instrumented, with vLLM's worker in a process of its
  own as Ray's default layout has it, rather than llm-init's in-process worker on the CPU.

Wall time runs from the builder call (the deploy request) to the first successful completion,
polled every 0.1 s while ``serve.run`` runs (``serve.run`` itself looks at the application's
status only once a second, so its return lags by up to a second).
For the llm-init arms the event log's own account of the start-up is set against it: scheduling
and the replica's boot (``ReplicaLaunched``), the initialization's phases, and the wait for
Serve's first health check (``ReplicaReady``); what it leaves unexplained is the controller
noticing the replica, routing and the first request itself. A warm-up deploy that is not
counted goes first: a cluster's first LLM deploy also starts Ray Serve LLM's usage-report actor,
and the first import of vLLM reads it from disk. Medians over rounds; ratios are of medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm_init.demo.run import (  # noqa: E402
    FAST_ENGINE_KWARGS,
    MODEL_ID,
    app_args,
    local_cluster,
    replica_env,
)
from llm_init.demo.tiny_model import build_tiny_model  # noqa: E402
from llm_init.ray_exit import exit_process  # noqa: E402
from llm_init.replay import ReplayedInitialization, list_initializations  # noqa: E402
from llm_init.stores import open_store  # noqa: E402

ARMS = ("ray", "llm-init", "llm-init-off", "llm-init-ray-layout", "llm-init-events",
        "llm-init-events+traces")


@dataclass
class Run:
    arm: str
    wall_s: float
    serve_run_s: float  # until serve.run returned
    first_completion_s: float  # until the first completion succeeded (the wall time)
    cpu_s: float  # CPU time the whole machine spent meanwhile (all processes, all cores)
    scheduling_s: float | None = None
    boot_s: float | None = None
    init_s: float | None = None
    ready_s: float | None = None
    phases: dict[str, float] | None = None

    @property
    def recorded_s(self) -> float | None:
        if self.init_s is None:
            return None
        return ((self.scheduling_s or 0.0) + (self.boot_s or 0.0) + self.init_s
                + (self.ready_s or 0.0))


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def machine_cpu_s() -> float:
    """Busy CPU seconds of the whole machine since boot (``/proc/stat``): a deploy's CPU cost
    varies much less than its wall time on a machine shared with other work."""
    with open("/proc/stat", encoding="ascii") as stat:
        user, nice, system, _idle, _iowait, irq, softirq = map(int, stat.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def otlp_receiver() -> Iterator[str]:
    """A real OTLP/HTTP receiver on loopback in its own process; yields its endpoint."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.otlp_receiver", "--no-decode"],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait()


def ray_args(model_dir: Path) -> dict[str, Any]:
    """Ray Serve LLM's own application args: the demo's model, engine arguments, placement
    and environment, without llm-init."""
    args = app_args(model_dir, event_store="memory://")
    args.pop("llm_init")
    (config,) = args["llm_configs"]
    config["runtime_env"] = {"env_vars": replica_env()}
    assert config["engine_kwargs"] == FAST_ENGINE_KWARGS
    return args


def llm_init_args(arm: str, model_dir: Path, store: str, otlp: str) -> dict[str, Any]:
    """``llm-init-events`` and ``llm-init-events+traces`` (opt-in) are the levels between off
    and fully instrumented: events in SQLite only, then with spans exported too."""
    if arm == "llm-init-off":
        return app_args(model_dir, event_store="memory://",
                        settings={"tracing": False, "metrics": False})
    if arm == "llm-init-events":
        return app_args(model_dir, event_store=store,
                        settings={"tracing": False, "metrics": False})
    exporter = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_SERVICE_NAME": "llm-init-bench"}
    if arm == "llm-init-events+traces":
        return app_args(model_dir, event_store=store, settings={"metrics": False}, env=exporter)
    return app_args(model_dir, event_store=store,
                    settings={"cpu_in_process_worker": arm != "llm-init-ray-layout"},
                    env=exporter)


def complete(port: int, deadline_s: float = 600.0, poll_s: float = 0.1) -> None:
    """One completion, retried every ``poll_s`` until one succeeds: it fails while the route
    does not exist yet, and waits in Serve's queue while the model's replica starts."""
    body = json.dumps({"model": MODEL_ID, "prompt": "Hello", "max_tokens": 4,
                       "temperature": 0}).encode()
    deadline = time.monotonic() + deadline_s
    while True:
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=deadline_s) as response:
                if json.loads(response.read())["choices"]:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(poll_s)


def build_app(arm: str, model_dir: Path, store: str, otlp: str,
              engine_kwargs: dict[str, Any] | None = None,
              llm_config: dict[str, Any] | None = None) -> Any:
    """The Serve application of ``arm``: Ray Serve LLM's builder for ``ray``, llm-init's for the
    others; ``engine_kwargs`` go over the demo's engine arguments, ``llm_config`` over the
    rest of its LLM config (a placement group, say)."""
    from ray.serve.llm import build_openai_app as ray_build

    from llm_init.serve import build_openai_app as llm_init_build

    args = ray_args(model_dir) if arm == "ray" else llm_init_args(arm, model_dir, store, otlp)
    args["llm_configs"][0]["engine_kwargs"].update(engine_kwargs or {})
    args["llm_configs"][0].update(llm_config or {})
    return (ray_build if arm == "ray" else llm_init_build)(args)


def quiet_clean_process() -> None:
    """Ray's INFO logs off the console, and no ``OTEL_*`` settings inherited from the shell:
    only the instrumented arms get an exporter."""
    for name in ("ray.serve", "ray.llm", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for key in [k for k in os.environ if k.startswith("OTEL_")]:
        del os.environ[key]


def deploy_once(arm: str, round_no: int, model_dir: Path, store: str, otlp: str,
                http_port: int, llm_config: dict[str, Any] | None = None) -> Run:
    from ray import serve

    name = f"bench-{arm}-{round_no}"
    cpu_started = machine_cpu_s()
    started = time.time()
    app = build_app(arm, model_dir, store, otlp, llm_config=llm_config)
    # serve.run polls the application's status once a second: the first completion, polled
    # meanwhile, tells when the model really serves.
    served: list[float] = []

    def deploy() -> None:
        serve.run(app, name=name, route_prefix="/")
        served.append(time.time())

    runner = threading.Thread(target=deploy, daemon=True)
    runner.start()
    complete(http_port)
    done = time.time()
    cpu = machine_cpu_s() - cpu_started
    runner.join()
    run = Run(arm, done - started, served[0] - started, done - started, cpu)
    if arm not in ("ray", "llm-init-off"):
        r = latest(store)
        run.scheduling_s, run.boot_s, run.init_s = r.scheduling_s, r.boot_s, r.duration_s
        run.ready_s = r.ready_s
        run.phases = r.phase_durations
    serve.delete(name)
    time.sleep(2.0)  # let the replica's processes exit before the next arm starts
    return run


def latest(store: str) -> ReplayedInitialization:
    s = open_store(store, create=False)
    try:
        (r,) = list_initializations(s, limit=1)
    finally:
        s.close()
    if r.outcome != "completed":
        raise RuntimeError(f"initialization {r.init_id} ended {r.outcome}: {r.error}")
    return r


def med(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def fmt(value: float | None, unit: str = "s") -> str:
    return "-" if value is None else f"{value:.1f} {unit}" if unit else f"{value:.3f}"


def report(runs: list[Run], arms: list[str], rounds: int) -> None:
    print(f"\nServe start-up, tiny Llama on the CPU, median of {rounds} alternating rounds, "
          f"{os.cpu_count()} CPUs ({cpu_model()}), Python {sys.version.split()[0]}")
    by_arm = {arm: [r for r in runs if r.arm == arm] for arm in arms}
    cols = ("wall", "CPU", "serve.run", "scheduling", "boot", "initialization",
            "readiness", "recorded", "recorded/wall")
    print(f"{'arm':<20}" + "".join(f"{c:>15}" for c in cols))
    for arm, rs in by_arm.items():
        shares = [r.recorded_s / r.wall_s for r in rs if r.recorded_s is not None]
        row = [med([r.wall_s for r in rs]), med([r.cpu_s for r in rs]),
               med([r.serve_run_s for r in rs]),
               med([r.scheduling_s for r in rs]),
               med([r.boot_s for r in rs]), med([r.init_s for r in rs]),
               med([r.ready_s for r in rs]), med([r.recorded_s for r in rs])]
        share = min(shares) if shares else None
        print(f"{arm:<20}" + "".join(f"{fmt(v):>15}" for v in row)
              + f"{fmt(share, ''):>15}")
    print("(recorded/wall: the lowest over the rounds; the target is at least 0.95)")
    walls = {arm: med([r.wall_s for r in rs]) for arm, rs in by_arm.items()}
    cpus = {arm: med([r.cpu_s for r in rs]) for arm, rs in by_arm.items()}
    pairs = [("llm-init", "ray", "llm-init / Ray Serve LLM (target <= 1.0)"),
             ("llm-init-ray-layout", "ray", "llm-init, Ray's process layout / Ray Serve LLM"),
             ("llm-init", "llm-init-off", "telemetry on / off (target <= 1.02)")]
    for a, b, label in pairs:
        wa, wb, ca, cb = walls.get(a), walls.get(b), cpus.get(a), cpus.get(b)
        if wa and wb and ca and cb:
            print(f"{label:<52} wall {wa / wb:6.3f}   CPU {ca / cb:6.3f}")
    phases = [r.phases for r in by_arm.get("llm-init", []) if r.phases]
    if phases:
        print("llm-init phases (median s): " + ", ".join(
            f"{p} {statistics.median(x[p] for x in phases):.2f}" for p in phases[0]))
    print("per run (wall s / CPU s): " + "; ".join(
        f"{r.arm} {r.wall_s:.1f}/{r.cpu_s:.1f}" for r in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arms", default="ray,llm-init,llm-init-off",
                        help=f"comma-separated, in the order run each round; from {ARMS}")
    parser.add_argument("--warmup", type=int, default=1, help="deploys not counted, first")
    parser.add_argument("--json", type=Path, help="also write every run to this file")
    args = parser.parse_args()
    arms = args.arms.split(",")
    unknown = set(arms) - set(ARMS)
    if unknown:
        parser.error(f"unknown arms {sorted(unknown)}; known: {ARMS}")
    quiet_clean_process()
    with tempfile.TemporaryDirectory(prefix="llm-init-bench-") as tmp:
        runs = measure(args, arms, Path(tmp))
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in runs], indent=1))
    report(runs, arms, args.rounds)


def measure(args: argparse.Namespace, arms: list[str], work: Path) -> list[Run]:
    model_dir = build_tiny_model(work / "tiny-llama")
    store = f"sqlite:///{work / 'events.sqlite'}"
    http_port = free_port()
    runs: list[Run] = []
    with otlp_receiver() as otlp, local_cluster(metrics_port=free_port(), http_port=http_port):
        for n in range(args.warmup):
            warm = deploy_once(arms[-1], -1 - n, model_dir, store, otlp, http_port)
            print(f"warm-up: {warm.arm:<21} wall {warm.wall_s:6.1f} s (not counted)", flush=True)
        for round_no in range(args.rounds):
            # Rotate the order, so that no arm always runs first (on a cold page cache) or
            # right after the same neighbour.
            order = arms[round_no % len(arms):] + arms[:round_no % len(arms)]
            for arm in order:
                run = deploy_once(arm, round_no, model_dir, store, otlp, http_port)
                runs.append(run)
                print(f"round {round_no + 1}: {arm:<21} wall {run.wall_s:6.1f} s"
                      + (f", recorded {run.recorded_s:6.1f} s" if run.recorded_s else ""),
                      flush=True)
    return runs


if __name__ == "__main__":
    # Each Ray cluster this script starts leaves Ray's metric exporter behind (llm_init.ray_exit).
    exit_process(main() or 0)
