"""Serving after the start-up, side by side: completions per second and latency of llm-init's
default process layout against Ray Serve LLM's own.

    python benchmarks/serving.py [--rounds 2] [--seconds 60] [--clients 1,4,16]
                                 [--arms ray,llm-init[,llm-init-ray-layout]]

One local Ray cluster; each round deploys the same tiny random-weight Llama (same engine
arguments, placement and environment as ``serve_startup.py``, whose set-up this reuses) once
per arm, in rotating order (two arms and two rounds run A B B A), and deletes it again:

- ``ray``: ``ray.serve.llm.build_openai_app``, Ray Serve LLM's own; vLLM's CPU worker runs in a
  process of its own beside EngineCore (vLLM's default);
- ``llm-init``: ``llm_init.serve.build_openai_app`` with its defaults, fully instrumented
  (events in SQLite, spans over OTLP/HTTP to a receiver on loopback, metrics through Ray's
  pipeline): the single CPU worker runs inside EngineCore;
- ``llm-init-ray-layout`` (opt-in): the same with ``cpu_in_process_worker`` off, i.e. Ray's
  process layout, to tell the layout's share from the rest.

Once a deployment answers, ``--warmup`` seconds of load at the highest concurrency are not
counted; then each concurrency level runs ``--seconds`` of closed-loop load: that many clients
(``openai.AsyncOpenAI`` against Serve's HTTP port) each send the next completion as soon as the
last one returns. Every completion generates exactly ``--max-tokens`` tokens (``ignore_eos``),
so both arms do the same work per request. Completions per second counts those finished inside
the window; p50/p99 are over their latencies, pooled over rounds. ``machine CPU`` is the whole
machine's busy CPU time (clients included) per completion, which varies less than wall time on a
shared machine. The 1-minute load average is read before and after the run and after each level.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# serve_startup puts the project root on sys.path too.
from serve_startup import (
    build_app,
    complete,
    cpu_model,
    free_port,
    machine_cpu_s,
    otlp_receiver,
    quiet_clean_process,
)

from llm_init.demo.run import FAST_START_ENV, MODEL_ID, local_cluster
from llm_init.demo.tiny_model import build_tiny_model
from llm_init.ray_exit import exit_process

ARMS = ("ray", "llm-init", "llm-init-ray-layout")
PROMPT = "The quick brown fox jumps over the lazy dog, and then it runs into the forest."


@dataclass
class Level:
    arm: str
    round_no: int
    clients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    tokens: int = 0  # completion tokens of the counted completions
    cpu_s: float = 0.0
    load1: float = 0.0  # 1-minute load average right after the level

    @property
    def completions(self) -> int:
        return len(self.latencies)


def load_average() -> str:
    with open("/proc/loadavg", encoding="ascii") as f:
        return f.read().strip()


async def drive(port: int, clients: int, seconds: float, max_tokens: int,
                level: Level | None) -> None:
    """``clients`` closed loops of completions for ``seconds``; records into ``level``."""
    import httpx
    import openai

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=300.0) as http, openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0,
            http_client=http) as client:
        end = time.perf_counter() + seconds

        async def loop() -> None:
            while (started := time.perf_counter()) < end:
                try:
                    response = await client.completions.create(
                        model=MODEL_ID, prompt=PROMPT, max_tokens=max_tokens, temperature=0,
                        extra_body={"ignore_eos": True})
                except openai.APIError as e:
                    if level is not None:
                        level.errors += 1
                    print(f"  request failed: {e}", file=sys.stderr, flush=True)
                    await asyncio.sleep(0.5)
                    continue
                done = time.perf_counter()
                if level is not None and done <= end:
                    level.latencies.append(done - started)
                    level.tokens += response.usage.completion_tokens if response.usage else 0

        await asyncio.gather(*(loop() for _ in range(clients)))


def serve_arm(arm: str, round_no: int, args: argparse.Namespace, model_dir: Path, store: str,
              otlp: str, http_port: int) -> list[Level]:
    """Deploys ``arm``, warms it up, runs every concurrency level against it, deletes it."""
    from ray import serve

    name = f"serving-{arm}-{round_no}"
    started = time.time()
    app = build_app(arm, model_dir, store, otlp, engine_kwargs={"dtype": args.dtype})
    serve.run(app, name=name, route_prefix="/")
    complete(http_port, deadline_s=120.0)  # the app is up: it answers soon or not at all
    print(f"round {round_no + 1}: {arm} serving after {time.time() - started:.1f} s; "
          f"warm-up {args.warmup:g} s", flush=True)
    levels = []
    try:
        asyncio.run(drive(http_port, max(args.clients), args.warmup, args.max_tokens, None))
        for clients in args.clients:
            level = Level(arm, round_no, clients, args.seconds)
            cpu = machine_cpu_s()
            asyncio.run(drive(http_port, clients, args.seconds, args.max_tokens, level))
            level.cpu_s = machine_cpu_s() - cpu
            level.load1 = float(load_average().split()[0])
            levels.append(level)
            print(f"round {round_no + 1}: {arm:<20} {clients:>3} clients "
                  f"{level.completions / level.seconds:8.2f} completions/s, "
                  f"p50 {1000 * pct(level.latencies, 50):7.1f} ms, "
                  f"p99 {1000 * pct(level.latencies, 99):7.1f} ms, errors {level.errors}, "
                  f"load {level.load1:.2f}", flush=True)
    finally:
        serve.delete(name)
        time.sleep(2.0)  # let the replica's processes exit before the next arm starts
    return levels


def pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank); NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def report(levels: list[Level], args: argparse.Namespace, arms: list[str],
           loads: tuple[str, str]) -> None:
    print(f"\nServing after start-up, tiny Llama on the CPU, {args.rounds} round(s) of "
          f"{args.seconds:g} s per level and arm, {args.max_tokens} tokens per completion, "
          f"dtype {args.dtype}, "
          f"{len(arms)} arms in rotating order; machine: CPUs {cpu_model()}, "
          f"Python {sys.version.split()[0]}")
    print(f"load average before: {loads[0]}; after: {loads[1]}")
    header = ("arm", "clients", "compl/s", "p50 ms", "p99 ms", "CPU ms/compl", "errors",
              "thr / ray", "p50 / ray", "p99 / ray")
    print(f"{header[0]:<20}{header[1]:>8}" + "".join(f"{h:>13}" for h in header[2:]))
    pooled: dict[tuple[str, int], tuple[float, float, float, float, int]] = {}
    for arm in arms:
        for clients in args.clients:
            ls = [x for x in levels if x.arm == arm and x.clients == clients]
            lat = [v for x in ls for v in x.latencies]
            n = len(lat)
            thr = n / sum(x.seconds for x in ls) if ls else float("nan")
            cpu_ms = 1000 * sum(x.cpu_s for x in ls) / n if n else float("nan")
            pooled[arm, clients] = (thr, pct(lat, 50), pct(lat, 99), cpu_ms,
                                    sum(x.errors for x in ls))
    for arm in arms:
        for clients in args.clients:
            thr, p50, p99, cpu_ms, errors = pooled[arm, clients]
            ray = pooled.get(("ray", clients))
            ratios = ("", "", "") if ray is None else (
                f"{thr / ray[0]:.3f}", f"{p50 / ray[1]:.3f}", f"{p99 / ray[2]:.3f}")
            print(f"{arm:<20}{clients:>8}{thr:>13.2f}{1000 * p50:>13.1f}{1000 * p99:>13.1f}"
                  f"{cpu_ms:>13.1f}{errors:>13}" + "".join(f"{r:>13}" for r in ratios))
    print("(targets: throughput / ray >= 0.98, p99 / ray <= 1.05)")
    for arm in arms:
        if arm == "ray":
            continue
        per_round = []
        for x in levels:
            if x.arm != arm:
                continue
            ray_levels = [y for y in levels if y.arm == "ray" and y.clients == x.clients
                          and y.round_no == x.round_no]
            if ray_levels and ray_levels[0].completions:
                per_round.append(f"r{x.round_no + 1}/{x.clients}c "
                                 f"{x.completions / ray_levels[0].completions:.3f}")
        if per_round:
            print(f"{arm} / ray throughput per round and level: " + ", ".join(per_round))
    tokens = {x.tokens / x.completions for x in levels if x.completions}
    if tokens != {float(args.max_tokens)}:
        print(f"WARNING: tokens per completion {sorted(tokens)}, not {args.max_tokens}: "
              "the arms did not do the same work per request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60.0, help="per level and arm")
    parser.add_argument("--clients", default="1,4,16",
                        help="comma-separated concurrency levels, run in this order")
    parser.add_argument("--warmup", type=float, default=10.0,
                        help="seconds of load not counted after each deploy")
    parser.add_argument("--max-tokens", type=int, default=32)
    # vLLM 0.32's CPU build dies with SIGILL in the worker at the first single-sequence bfloat16
    # request on hosts with AMX (checked on a Xeon with amx_bf16 and AVX-512, with AsyncLLM
    # outside Ray too); float32 serves on every host. Both arms get the same.
    parser.add_argument("--dtype", default="float32",
                        help="engine dtype for both arms (the demo's is bfloat16)")
    parser.add_argument("--arms", default="ray,llm-init",
                        help=f"comma-separated, in the order of the first round; from {ARMS}")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment of every arm's replica (repeatable)")
    parser.add_argument("--json", type=Path, help="also write every level to this file")
    args = parser.parse_args()
    arms = args.arms.split(",")
    unknown = set(arms) - set(ARMS)
    if unknown:
        parser.error(f"unknown arms {sorted(unknown)}; known: {ARMS}")
    try:
        args.clients = [int(c) for c in args.clients.split(",")]
    except ValueError:
        parser.error(f"--clients must be comma-separated integers, got {args.clients!r}")
    if min(args.clients) < 1 or args.seconds <= 0 or args.rounds < 1:
        parser.error("--clients, --seconds and --rounds must be positive")
    for pair in args.env:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            parser.error(f"--env must be NAME=VALUE, got {pair!r}")
        FAST_START_ENV[name] = value  # replica_env() starts from it, for every arm
    quiet_clean_process()
    before = load_average()
    with tempfile.TemporaryDirectory(prefix="llm-init-serving-") as tmp:
        work = Path(tmp)
        model_dir = build_tiny_model(work / "tiny-llama")
        store = f"sqlite:///{work / 'events.sqlite'}"
        http_port = free_port()
        levels: list[Level] = []
        with otlp_receiver() as otlp, local_cluster(metrics_port=free_port(),
                                                    http_port=http_port):
            for round_no in range(args.rounds):
                # Rotate the order: with two arms and two rounds, A B B A, so a drift in the
                # machine's speed hits both arms alike.
                order = arms[round_no % len(arms):] + arms[:round_no % len(arms)]
                for arm in order:
                    levels += serve_arm(arm, round_no, args, model_dir, store, otlp, http_port)
    after = load_average()
    if args.json:
        args.json.write_text(json.dumps(
            [asdict(x) | {"completions": x.completions} for x in levels], indent=1))
    report(levels, args, arms, (before, after))
    print("median latency per level (ms): " + "; ".join(
        f"{x.arm} r{x.round_no + 1} {x.clients}c {1000 * statistics.median(x.latencies):.1f}"
        for x in levels if x.latencies))


if __name__ == "__main__":
    # Each Ray cluster this script starts leaves Ray's metric exporter behind (llm_init.ray_exit).
    exit_process(main() or 0)
