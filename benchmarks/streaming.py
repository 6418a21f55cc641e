"""Weights at the speed of the store: five ways to start a replica whose weights come from S3.

    python benchmarks/streaming.py [--rounds 3] [--quick] [--arms ray,ray-stream,...]
                                   [--eager | --compile] [--warmup 1] [--json FILE]

A random-weight Llama of about 1 GiB of real bf16 tensors, wide and shallow (hidden 4096,
intermediate 18432, 2 layers, 32 heads, 8 KV heads; the tiny model's tokenizer), split into
8 safetensors shards with an index (``--quick``: about 128 MiB in 4 shards, 1 round), is
uploaded to moto's S3 server on loopback (a process of its own) and deployed through real Ray
Serve, once per arm and round, in rotating order:

- ``ray``: Ray Serve LLM's ``build_openai_app``; its node initialization downloads the model
  (boto3, into the Hugging Face cache), vLLM loads the local copy;
- ``ray-stream``: the same with ``engine_kwargs.load_format = "runai_streamer"``: Ray downloads
  nothing and vLLM streams the shards from the bucket URI;
- ``llm-init``: ``llm_init.serve.build_openai_app`` at its defaults (its download step, then the
  engine);
- ``llm-init-stream``: the same with ``load_format = "runai_streamer"``;
- ``llm-init-overlap``: llm-init with the setting ``overlap_weights: True`` (the engine starts
  while the shards are still arriving).

The last two need features that may be missing from the checked-out code: ``llm-init-overlap``
is left out, with a line saying why, when ``LLMInitSettings`` has no field ``overlap_weights``;
``llm-init-stream`` is run once and left out when llm-init downloaded ``*.safetensors`` into
its own cache (no streaming parity: vLLM then streams a local copy).

Every deploy runs on a fresh "node": its own llm-init download cache, Hugging Face home
(Ray's download target), ``VLLM_CACHE_ROOT`` (so vLLM's ``assets/model_streamer`` too),
``TORCHINDUCTOR_CACHE_DIR`` and ``TRITON_CACHE_DIR``, all new, empty directories, removed after.
Compilation is on (vLLM's default ``enforce_eager=False``: a cold compile in every deploy)
unless ``--eager``; ``--quick`` implies ``--eager``. Wall time runs from the builder call to
the first completion answered through the ``openai`` client, polled every 0.1 s while
``serve.run`` runs.

Beside the deploys, each round also runs a probe of the store: parallel ranged GETs (boto3,
16 threads, 8 MiB ranges) of the same shard objects from the same server, the ceiling the arms'
weight movement is set against. Weight movement is, per arm: the download step's bytes/s from
llm-init's event log (``StepProgressed``, stage ``node_completed``); a streamed load's bytes
and seconds from llm-init's log where it records them, else from the RunAI streamer's own line
("Overall time to stream ...", ``RUNAI_STREAMER_LOG_TO_STDERR=1``) in the replica's log files;
for Ray's download, the shards' bytes over the time from the first file appearing in the
node's Hugging Face cache to the last byte there (watched every 50 ms: Ray logs no times).
vLLM's "Loading weights took" (a local copy into memory) is shown apart, and the bytes of
weight files each deploy left on the node's disk (none where streamed). For the llm-init arms
the share of the wall time the event log explains (scheduling, boot, the initialization's
phases, readiness) is set against it, as in ``serve_startup.py``. Medians over rounds, spread
min-max; ratios are of medians. The targets are printed beside the results.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.serve_startup import cpu_model, free_port, latest, quiet_clean_process  # noqa: E402
from llm_init.demo.run import (  # noqa: E402
    FAST_ENGINE_KWARGS,
    app_args,
    local_cluster,
    quiet_libraries,
)
from llm_init.demo.tiny_model import ModelShape, build_tiny_model  # noqa: E402
from llm_init.environ import environment  # noqa: E402
from llm_init.ray_exit import exit_process  # noqa: E402
from tests.support.s3 import ENV, MIB, MotoS3  # noqa: E402

ARMS = ("ray", "ray-stream", "llm-init", "llm-init-stream", "llm-init-overlap")
STREAMED = {"ray-stream", "llm-init-stream"}
STREAM_KWARGS = {"load_format": "runai_streamer"}
FULL = (ModelShape(hidden_size=4096, intermediate_size=18432, num_layers=2, num_heads=32,
                   num_kv_heads=8), 8)
QUICK = (ModelShape(hidden_size=2048, intermediate_size=8192, num_layers=1, num_heads=16,
                    num_kv_heads=8), 4)
# Ray Serve LLM's download lock is ~/<model_id>-full.lock, shared by every process of this
# machine: a name of this run's own keeps other runs' locks from making it skip its download.
MODEL_ID = f"streaming-bench-{os.getpid()}"
PROBE_WORKERS = 16
PROBE_RANGE = 8 * MIB
DEPLOY_DEADLINE_S = 1200.0

TARGETS = {
    "stream_vs_ray": 1.0,  # llm-init + streamer / Ray + streamer, at most
    "overlap_vs_sequential": 0.85,  # llm-init overlapped / llm-init sequential, at most
    "weights_vs_probe": 0.8,  # weight movement bytes/s / probe, at least
    "explained": 0.95,  # recorded / wall, at least (lowest over rounds)
}

_STREAMER_LINE = re.compile(r"\[RunAI Streamer\] Overall time to stream ([\d.]+) (\w+) of all "
                            r"files to \S+: ([\d.]+)s")
_LOADING_LINE = re.compile(r"Loading weights took ([\d.]+) s")
_UNITS = {"Byte": 1, "Bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


@dataclass
class Deploy:
    arm: str
    round_no: int
    wall_s: float
    serve_run_s: float
    moved_bytes: int | None = None  # weight bytes moved from the store
    moved_s: float | None = None
    moved_how: str = ""
    vllm_load_s: float | None = None  # "Loading weights took": a local copy into memory
    recorded_s: float | None = None  # llm-init arms: what the event log accounts for
    phases: dict[str, float] = field(default_factory=dict)
    cached_weight_bytes: int = 0  # *.safetensors in llm-init's download cache afterwards
    local_weight_bytes: int = 0  # *.safetensors anywhere on the node's disk afterwards
    loadavg_1m: float = 0.0

    @property
    def moved_bps(self) -> float | None:
        if not self.moved_bytes or not self.moved_s:
            return None
        return self.moved_bytes / self.moved_s

    @property
    def explained(self) -> float | None:
        return None if self.recorded_s is None else self.recorded_s / self.wall_s


@dataclass
class Bench:
    work: Path
    source: str  # s3://bucket/prefix
    endpoint: str
    weight_bytes: int  # the shards' bytes in the store
    http_port: int
    store: str  # llm-init's event store
    logs: Path  # this Ray session's log directory
    compile: bool
    unavailable: dict[str, str] = field(default_factory=dict)  # arm -> why
    # llm-init's download capped at this many bytes/s: a store slower than loopback moto, where
    # the download is a real share of the start (Ray's download has no such setting)
    max_bandwidth: float | None = None


# -- the model and the store ------------------------------------------------------------------

def upload(s3: MotoS3, model_dir: Path) -> tuple[str, int]:
    """The model under ``s3://models/<MODEL_ID>``; its URI and the shards' bytes."""
    source = s3.upload_dir(model_dir, f"models/{MODEL_ID}")
    weights = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
    return source, weights


def probe(endpoint: str, source: str) -> tuple[int, float]:
    """Parallel ranged GETs of every shard object: bytes read and seconds (the ceiling)."""
    import boto3
    from botocore.config import Config

    bucket, _, prefix = source.removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=endpoint,
                          config=Config(max_pool_connections=PROBE_WORKERS,
                                        s3={"addressing_style": "path"}),
                          aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"],
                          region_name=ENV["AWS_DEFAULT_REGION"])
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"]
    ranges = [(o["Key"], start, min(start + PROBE_RANGE, o["Size"]) - 1)
              for o in listed if o["Key"].endswith(".safetensors")
              for start in range(0, o["Size"], PROBE_RANGE)]

    def get(key: str, first: int, last: int) -> int:
        body = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={first}-{last}")["Body"]
        return sum(len(chunk) for chunk in body.iter_chunks(1 * MIB))

    started = time.perf_counter()
    with ThreadPoolExecutor(PROBE_WORKERS) as pool:
        got = sum(pool.map(lambda r: get(*r), ranges))
    return got, time.perf_counter() - started


# -- one deploy -------------------------------------------------------------------------------

def node_env(node: Path, endpoint: str) -> dict[str, str]:
    """A fresh node's caches (all new directories) and the store's endpoint and credentials."""
    return {**ENV, "AWS_ENDPOINT_URL": endpoint,
            "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0",
            # The streamer's "Overall time to stream" line; without a handler of its own it
            # is an INFO record nobody prints.
            "RUNAI_STREAMER_LOG_TO_STDERR": "1",
            # The streamer's S3 client drops a connection that falls under its throughput
            # minimum; moto on two cores cannot feed the default number of connections for a
            # 1 GiB model (every shard failed, "failure to meet throughput minimum"). Both
            # streamed arms get the same, as the probe gets its 16 threads.
            "RUNAI_STREAMER_CONCURRENCY": os.environ.get("RUNAI_STREAMER_CONCURRENCY", "4"),
            "HF_HOME": str(node / "hf"), "VLLM_CACHE_ROOT": str(node / "vllm"),
            "VLLM_ASSETS_CACHE": str(node / "vllm" / "assets"),
            "TORCHINDUCTOR_CACHE_DIR": str(node / "inductor"),
            "TRITON_CACHE_DIR": str(node / "triton")}


def build_app(arm: str, bench: Bench, node: Path) -> Any:
    """The Serve application of ``arm`` on the fresh node ``node``."""
    from ray.serve.llm import build_openai_app as ray_build

    from llm_init.serve import build_openai_app as llm_init_build

    engine_kwargs = {**FAST_ENGINE_KWARGS, "enforce_eager": not bench.compile,
                     **(STREAM_KWARGS if arm in STREAMED else {})}
    download: dict[str, Any] = {"cache_dir": str(node / "llm-init")}
    if bench.max_bandwidth:
        download["max_bandwidth"] = bench.max_bandwidth
    settings: dict[str, Any] = {"download_options": download}
    if arm == "llm-init-overlap":
        settings["overlap_weights"] = True
    args = app_args(node, event_store=bench.store, settings=settings,
                    env=node_env(node, bench.endpoint),
                    llm_config={"model_loading_config": {
                        "model_id": MODEL_ID, "model_source": {"bucket_uri": bench.source}},
                        "engine_kwargs": engine_kwargs})
    if arm.startswith("ray"):
        args.pop("llm_init")
        return ray_build(args)
    return llm_init_build(args)


def first_completion(port: int, failed: list[BaseException], deadline_s: float) -> None:
    """One completion through the openai client, retried every 0.1 s until one is answered:
    the route is missing until the app exists, then the request waits for the replica."""
    from openai import OpenAI, OpenAIError

    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="not-needed",
                    max_retries=0, timeout=deadline_s)
    deadline = time.monotonic() + deadline_s
    while True:
        if failed:
            raise RuntimeError(f"serve.run failed: {failed[0]}") from failed[0]
        try:
            reply = client.completions.create(model=MODEL_ID, prompt="Hello", max_tokens=4,
                                              temperature=0)
            if reply.choices:
                return
        except OpenAIError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


class CacheWatch:
    """Watches a directory every 50 ms: when its first file appeared, and when the files under
    it first held ``total`` bytes or more."""

    def __init__(self, path: Path, total: int) -> None:
        self.path, self.total = path, total
        self.first: float | None = None
        self.full: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> CacheWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.05) and self.full is None:
            size, seen = 0, False
            for p in self.path.rglob("*") if self.path.exists() else ():
                with contextlib.suppress(OSError):
                    if p.is_file():
                        seen = True
                        size += p.stat().st_size
            now = time.time()
            if seen and self.first is None:
                self.first = now
            if size >= self.total:
                self.full = now


def log_offsets(logs: Path) -> dict[Path, int]:
    return {p: p.stat().st_size for p in logs.rglob("*") if p.is_file()}


def new_log_text(logs: Path, before: dict[Path, int]) -> str:
    """What this Ray session's log files gained since ``before`` (the replicas' and their
    engines' standard output and error, Serve's logs)."""
    parts = []
    for p in sorted(logs.rglob("*")):
        if p.is_file() and p.suffix in (".out", ".err", ".log"):
            with contextlib.suppress(OSError), open(p, "rb") as f:
                f.seek(before.get(p, 0))
                parts.append(f.read().decode("utf-8", "replace"))
    return "\n".join(parts)


def streamer_line(text: str) -> tuple[int, float] | None:
    """Bytes and seconds of the RunAI streamer's own "Overall time to stream" line."""
    found = _STREAMER_LINE.findall(text)
    if not found:
        return None
    size, unit, seconds = found[-1]
    return int(float(size) * _UNITS.get(unit, 1)), float(seconds)


@dataclass
class Recorded:
    """What llm-init's event log says about the weights of one initialization."""

    moved: tuple[int, float, str] | None  # bytes, seconds, and where the figure came from
    weight_loading_s: float | None  # the engine's weight_loading sub-phase


def llm_init_weights(store: str, init_id: str, *, streamed: bool) -> Recorded:
    """Weight movement as llm-init's event log records it: for a streamed load, the bytes and
    seconds an event records for the engine's weight loading (none on code without the
    streaming feature); otherwise the download step's bytes and seconds."""
    from llm_init.events import StepProgressed
    from llm_init.replay import read_events
    from llm_init.stores import open_store

    log = open_store(store, create=False)
    try:
        events = read_events(log, init_id)
    finally:
        log.close()
    loading = [float(e.details["duration_s"]) for e in events
               if isinstance(e, StepProgressed) and e.details.get("subphase") == "weight_loading"
               and isinstance(e.details.get("duration_s"), int | float)]
    recorded = Recorded(None, max(loading) if loading else None)
    if streamed:
        for e in events:
            fields = (dict(e.details) if isinstance(e, StepProgressed)
                      else {f.name: getattr(e, f.name) for f in dataclasses.fields(e)})
            if fields.get("subphase") != "weight_loading" and "weight" not in e.TYPE.lower():
                continue
            moved = next((fields[k] for k in ("bytes", "weight_bytes", "bytes_total")
                          if isinstance(fields.get(k), int) and fields[k] > 0), None)
            seconds = next((fields[k] for k in ("seconds", "duration_s")
                            if isinstance(fields.get(k), int | float) and fields[k] > 0), None)
            if moved and seconds:
                recorded.moved = (moved, float(seconds), "llm-init log: weights streamed")
        return recorded
    download = [e.details for e in events if isinstance(e, StepProgressed)
                and e.phase == "download" and "node_id" in e.details]
    done = [d for d in download if d.get("stage") == "node_completed"]
    moved = sum(int(d.get("bytes_delta") or 0) for d in download)
    seconds = max((float(d.get("seconds") or 0.0) for d in done),
                  default=0.0)
    if moved and seconds:
        recorded.moved = (moved, seconds, "llm-init log: download step")
    return recorded


def weights_on_disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.safetensors") if p.is_file())


def deploy(arm: str, round_no: int, bench: Bench) -> Deploy:
    from ray import serve

    node = bench.work / "nodes" / f"r{round_no}-{arm}"
    shutil.rmtree(node, ignore_errors=True)
    node.mkdir(parents=True)
    name = f"stream-{arm}-{round_no}"
    offsets = log_offsets(bench.logs)
    failed: list[BaseException] = []
    served: list[float] = []
    with CacheWatch(node / "hf", bench.weight_bytes) as watch:
        started = time.time()
        app = build_app(arm, bench, node)

        def run() -> None:
            try:
                serve.run(app, name=name, route_prefix="/")
                served.append(time.time())
            except BaseException as exc:
                failed.append(exc)

        runner = threading.Thread(target=run, daemon=True)
        runner.start()
        try:
            first_completion(bench.http_port, failed, DEPLOY_DEADLINE_S)
            done = time.time()
            runner.join()
        except BaseException:
            with contextlib.suppress(Exception):
                serve.delete(name)
            raise
    d = Deploy(arm, round_no, done - started, (served[0] if served else done) - started,
               loadavg_1m=os.getloadavg()[0])
    text = new_log_text(bench.logs, offsets)
    loads = _LOADING_LINE.findall(text)
    d.vllm_load_s = float(loads[-1]) if loads else None
    d.cached_weight_bytes = weights_on_disk(node / "llm-init")
    d.local_weight_bytes = weights_on_disk(node)
    streamed = streamer_line(text) if arm in STREAMED else None
    if arm.startswith("llm-init"):
        r = latest(bench.store)
        d.recorded_s, d.phases = r.startup_s, r.phase_durations
        recorded = llm_init_weights(bench.store, r.init_id, streamed=arm in STREAMED)
        if recorded.moved is not None:
            d.moved_bytes, d.moved_s, d.moved_how = recorded.moved
        # llm-init captures vLLM's log lines into its own record.
        d.vllm_load_s = recorded.weight_loading_s
    if d.moved_bytes is None and streamed is not None:
        # The streamer rounds its size for humans; the shards' own bytes are exact.
        d.moved_bytes, d.moved_s = bench.weight_bytes, streamed[1]
        d.moved_how = "streamer's log line"
    if arm == "ray" and watch.first is not None and watch.full is not None:
        d.moved_bytes, d.moved_s = bench.weight_bytes, watch.full - watch.first
        d.moved_how = "Ray's download, cache watched"
    serve.delete(name)
    time.sleep(2.0)  # let the replica's processes exit before the next deploy
    shutil.rmtree(node, ignore_errors=True)
    return d


# -- rounds and the report --------------------------------------------------------------------

def overlap_missing() -> str | None:
    from llm_init.serve.settings import LLMInitSettings

    if "overlap_weights" not in {f.name for f in dataclasses.fields(LLMInitSettings)}:
        return "LLMInitSettings has no field overlap_weights"
    return None


def measure(args: argparse.Namespace, arms: list[str], work: Path,
            s3: MotoS3) -> tuple[list[Deploy], list[tuple[int, float]], Bench]:
    import ray

    shape, shards = QUICK if args.quick else FULL
    started = time.perf_counter()
    model_dir = build_tiny_model(work / "model", shape=shape, shards=shards)
    source, weight_bytes = upload(s3, model_dir)
    print(f"model: {weight_bytes / MIB:.0f} MiB of weights in {shards} shards, built and "
          f"uploaded to {source} in {time.perf_counter() - started:.0f} s", flush=True)
    shutil.rmtree(model_dir)  # every arm reads the store, never this copy
    http_port = free_port()
    deploys: list[Deploy] = []
    probes: list[tuple[int, float]] = []
    with local_cluster(metrics_port=None, http_port=http_port):
        quiet_libraries()
        node = ray._private.worker._global_node
        bench = Bench(work=work, source=source, endpoint=s3.endpoint_url,
                      weight_bytes=weight_bytes, http_port=http_port,
                      store=f"sqlite:///{work / 'events.sqlite'}",
                      logs=Path(node.get_logs_dir_path()), compile=args.compile,
                      max_bandwidth=args.store_mbps * 1e6 if args.store_mbps else None)
        if "llm-init-overlap" in arms and (why := overlap_missing()):
            bench.unavailable["llm-init-overlap"] = why
        for arm, why in bench.unavailable.items():
            print(f"{arm}: not available: {why}", flush=True)
        runnable = [a for a in arms if a not in bench.unavailable]
        for n in range(args.warmup):
            warm = deploy(runnable[0], -1 - n, bench)
            print(f"warm-up: {warm.arm:<17} wall {warm.wall_s:6.1f} s (not counted)", flush=True)
        for round_no in range(args.rounds):
            moved, seconds = probe(bench.endpoint, bench.source)
            probes.append((moved, seconds))
            print(f"round {round_no + 1}: probe             {moved / seconds / 1e6:7.0f} MB/s "
                  f"({moved / MIB:.0f} MiB in {seconds:.2f} s)", flush=True)
            # Rotated, so that no arm always runs first or after the same neighbour.
            order = runnable[round_no % len(runnable):] + runnable[:round_no % len(runnable)]
            for arm in order:
                if arm in bench.unavailable:
                    continue
                d = deploy(arm, round_no, bench)
                if arm == "llm-init-stream" and d.cached_weight_bytes:
                    bench.unavailable[arm] = (
                        f"llm-init downloaded {d.cached_weight_bytes / MIB:.0f} MiB of "
                        "*.safetensors into its cache (no streaming parity on this code)")
                    print(f"round {round_no + 1}: {arm}: not available: "
                          f"{bench.unavailable[arm]} (wall {d.wall_s:.1f} s, not counted)",
                          flush=True)
                    continue
                deploys.append(d)
                print(f"round {round_no + 1}: {arm:<17} wall {d.wall_s:6.1f} s"
                      + (f", weights {d.moved_bps / 1e6:.0f} MB/s ({d.moved_how})"
                         if d.moved_bps else ", weights -")
                      + (f", explained {d.explained:.3f}" if d.explained else "")
                      + f", weights on the node's disk {d.local_weight_bytes / MIB:.0f} MiB"
                      + f", load {d.loadavg_1m:.1f}", flush=True)
    return deploys, probes, bench


def med(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def fmt(value: float | None, spec: str = ".1f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def report(deploys: list[Deploy], probes: list[tuple[int, float]], bench: Bench,
           arms: list[str], args: argparse.Namespace) -> dict[str, Any]:
    probe_bps = med([b / s for b, s in probes])
    print(f"\nWeights from S3 (moto, loopback), {bench.weight_bytes / MIB:.0f} MiB of bf16 "
          f"weights, compilation {'on' if bench.compile else 'off'}, median of {args.rounds} "
          f"alternating rounds (spread min-max), deploy request to first completion; "
          f"{os.cpu_count()} CPUs ({cpu_model()}), Python {sys.version.split()[0]}")
    print(f"probe (parallel ranged GETs, {PROBE_WORKERS} threads x {PROBE_RANGE // MIB} MiB): "
          f"{fmt(probe_bps and probe_bps / 1e6, '.0f')} MB/s, per round "
          + ", ".join(f"{b / s / 1e6:.0f}" for b, s in probes))
    cols = ("wall s", "spread s", "weights MB/s", "/ probe", "weights s", "vLLM load s",
            "explained", "on disk MiB")
    print(f"{'arm':<18}" + "".join(f"{c:>14}" for c in cols) + "  weights measured by")
    summary: dict[str, dict[str, Any]] = {}
    for arm in arms:
        if arm in bench.unavailable:
            print(f"{arm:<18}not available: {bench.unavailable[arm]}")
            continue
        rs = [d for d in deploys if d.arm == arm]
        if not rs:
            continue
        walls = [d.wall_s for d in rs]
        bps = med([d.moved_bps for d in rs])
        explained = [d.explained for d in rs if d.explained is not None]
        s = summary[arm] = {
            "wall_s": med(list(walls)), "spread": (min(walls), max(walls)), "bps": bps,
            "vs_probe": bps / probe_bps if bps and probe_bps else None,
            "moved_s": med([d.moved_s for d in rs]),
            "vllm_load_s": med([d.vllm_load_s for d in rs]),
            "explained_min": min(explained) if explained else None,
            "on_disk_mib": max(d.local_weight_bytes for d in rs) / MIB,
            "how": sorted({d.moved_how for d in rs if d.moved_how})}
        row = [fmt(s["wall_s"]), f"{min(walls):.1f}-{max(walls):.1f}",
               fmt(bps and bps / 1e6, ".0f"), fmt(s["vs_probe"], ".2f"), fmt(s["moved_s"], ".2f"),
               fmt(s["vllm_load_s"], ".2f"), fmt(s["explained_min"], ".3f"),
               fmt(s["on_disk_mib"], ".0f")]
        print(f"{arm:<18}" + "".join(f"{c:>14}" for c in row) + "  " + ", ".join(s["how"]))
    print("(explained: recorded / wall, the lowest over the rounds, llm-init arms only; on disk: "
          "weight files written to the node's disk, the most in any round)")
    phases = {arm: [d.phases for d in deploys if d.arm == arm and d.phases] for arm in summary}
    for arm, ps in phases.items():
        if ps:
            print(f"{arm} phases (median s): " + ", ".join(
                f"{p} {statistics.median(x.get(p, 0.0) for x in ps):.2f}" for p in ps[0]))
    targets(summary, bench)
    print("per run (wall s): " + "; ".join(f"r{d.round_no + 1} {d.arm} {d.wall_s:.1f}"
                                            for d in deploys))
    loads = [d.loadavg_1m for d in deploys]
    if loads:
        print(f"1-minute load average after each deploy: {min(loads):.1f}-{max(loads):.1f}")
    return summary


def targets(summary: dict[str, dict[str, Any]], bench: Bench) -> None:
    def wall(arm: str) -> float | None:
        return summary.get(arm, {}).get("wall_s")

    def verdict(ok: bool | None) -> str:
        return "n/a" if ok is None else "met" if ok else "NOT met"

    def missing(*names: str) -> str:
        gone = [f"{a}: {bench.unavailable.get(a, 'not run')}" for a in names
                if wall(a) is None]
        return f"  ({'; '.join(gone)})" if gone else ""

    print("\ntargets:")
    a, b = wall("llm-init-stream"), wall("ray-stream")
    ratio = a / b if a and b else None
    print(f"  llm-init + streamer / Ray + streamer <= {TARGETS['stream_vs_ray']:.2f}: "
          f"{fmt(ratio, '.3f')} {verdict(None if ratio is None else ratio <= 1.0)}"
          + missing("llm-init-stream", "ray-stream"))
    a, b = wall("llm-init-overlap"), wall("llm-init")
    ratio = a / b if a and b else None
    print(f"  overlapped / llm-init sequential <= {TARGETS['overlap_vs_sequential']:.2f}: "
          f"{fmt(ratio, '.3f')} "
          f"{verdict(None if ratio is None else ratio <= TARGETS['overlap_vs_sequential'])}"
          + missing("llm-init-overlap", "llm-init"))
    rays = [w for w in (wall("ray"), wall("ray-stream")) if w]
    below = a < min(rays) if a and rays else None
    print(f"  overlapped below every Ray arm: {fmt(a)} s against "
          f"{', '.join(f'{w:.1f} s' for w in rays) or '-'} {verdict(below)}"
          + missing("llm-init-overlap"))
    for arm, s in summary.items():
        if arm.startswith("llm-init"):
            r = s["vs_probe"]
            print(f"  {arm}: weight bytes/s / probe >= {TARGETS['weights_vs_probe']:.2f}: "
                  f"{fmt(r, '.2f')} {verdict(None if r is None else r >= 0.8)}")
    for arm, s in summary.items():
        if arm.startswith("llm-init"):
            e = s["explained_min"]
            print(f"  {arm}: explained share >= {TARGETS['explained']:.2f}: {fmt(e, '.3f')} "
                  f"{verdict(None if e is None else e >= TARGETS['explained'])}")


def store_env(s3: MotoS3) -> contextlib.AbstractContextManager[None]:
    """This process's clients (the builders, the probe) reach the same store as the replicas."""
    return environment({**ENV, "AWS_ENDPOINT_URL": s3.endpoint_url})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help="default 3 (--quick: 1)")
    parser.add_argument("--quick", action="store_true",
                        help="a 128 MiB model in 4 shards, 1 round, no warm-up, --eager")
    parser.add_argument("--arms", default=",".join(ARMS),
                        help=f"comma-separated, in the order of the first round; from {ARMS}")
    parser.add_argument("--warmup", type=int, help="deploys not counted, first (default 1; "
                        "--quick: 0)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--eager", dest="compile", action="store_false", default=None,
                      help="enforce_eager=True: no compilation")
    mode.add_argument("--compile", dest="compile", action="store_true",
                      help="vLLM's default compilation (the default unless --quick)")
    parser.add_argument("--json", type=Path, help="also write every deploy to this file")
    parser.add_argument("--store-mbps", type=float,
                        help="cap llm-init's download at this many MB/s (llm-init arms only): a "
                        "store slower than loopback, where the download is a share of the start")
    args = parser.parse_args()
    args.rounds = args.rounds if args.rounds is not None else 1 if args.quick else 3
    args.warmup = args.warmup if args.warmup is not None else 0 if args.quick else 1
    args.compile = args.compile if args.compile is not None else not args.quick
    arms = args.arms.split(",")
    if unknown := set(arms) - set(ARMS):
        parser.error(f"unknown arms {sorted(unknown)}; known: {ARMS}")
    quiet_clean_process()
    print(f"{os.cpu_count()} CPUs ({cpu_model()}), load average at the start "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="llm-init-streaming-") as tmp, MotoS3() as s3, \
            store_env(s3):
        deploys, probes, bench = measure(args, arms, Path(tmp), s3)
    summary = report(deploys, probes, bench, arms, args)
    if args.json:
        args.json.write_text(json.dumps({
            "deploys": [{**dataclasses.asdict(d), "moved_bps": d.moved_bps} for d in deploys],
            "probes": probes, "unavailable": bench.unavailable, "summary": summary,
            "weight_bytes": bench.weight_bytes, "compile": bench.compile}, indent=1))
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    # Each Ray cluster this script starts leaves Ray's metric exporter behind (llm_init.ray_exit).
    exit_process(main() or 0)
