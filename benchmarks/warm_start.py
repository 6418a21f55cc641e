"""Warm starts, measured: cold against warm deploys, and the restore's own cost per MB.

    python benchmarks/warm_start.py [--rounds 3] [--skip-serve] [--restore-mb 64]

1. **Serve, cold against warm.** One local Ray cluster, an S3-compatible store (moto's server on
   loopback), the tiny random-weight Llama with vLLM's default compilation
   (``enforce_eager=False``). Each round deploys twice, each time on a "node" whose local
   caches are empty (its own download cache, ``cache_dir`` for ``VLLM_CACHE_ROOT``, and
   ``TORCHINDUCTOR_CACHE_DIR``): cold, on an empty store prefix (it compiles, then publishes
   after the replica is ready; the benchmark waits for the publish), then warm on the same
   prefix (it restores first). Alternating, one new prefix per round. Wall time runs from the
   builder call to the first completion; the event log gives ``engine_init``, vLLM's
   sub-phases and the restore. Medians over rounds; ratios are of medians.
2. **The restore's own cost.** An artifact of ``--restore-mb`` MB (the real cache of a cold
   start padded with incompressible files) published to and restored from a directory store
   and the S3 store: restore seconds (fetch, verify the archive's SHA-256, unpack with every
   file's SHA-256) per MB, against ``shutil.copytree`` of the same files.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def serve_rounds(rounds: int, workdir: pathlib.Path) -> list[dict[str, Any]]:
    from llm_init.demo.run import local_cluster
    from llm_init.demo.tiny_model import build_tiny_model
    from llm_init.demo.warm import artifact_store, deploy
    from tests.support.net import free_port

    for name in ("ray.serve", "ray.llm", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    model = build_tiny_model(workdir / "tiny")
    http_port = free_port()
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    rows: list[dict[str, Any]] = []
    with artifact_store(workdir) as (store, store_env), local_cluster(
            metrics_port=None, http_port=http_port):
        for round_no in range(rounds):
            prefixed = {**store, "url": f"{store['url']}/round-{round_no}-{uuid.uuid4().hex[:6]}"}
            for arm in ("cold", "warm"):
                start = deploy(workdir, f"r{round_no}-{arm}", model, http_port, prefixed,
                               {**env, **store_env}, wait_for_publish=arm == "cold")
                row = {"round": round_no, "arm": arm, "deploy_s": start.deploy_s,
                       **facts(start.store, start.init_id)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def facts(store_url: str, init_id: str) -> dict[str, Any]:
    from llm_init.events import (
        ArtifactMissed,
        ArtifactPublished,
        ArtifactRestored,
        PhaseCompleted,
        StepProgressed,
    )
    from llm_init.replay import read_events
    from llm_init.stores import open_store

    store = open_store(store_url, create=False)
    try:
        events = read_events(store, init_id)
    finally:
        store.close()
    out: dict[str, Any] = {}
    for e in events:
        if isinstance(e, PhaseCompleted):
            out[e.phase] = e.duration_s
        elif isinstance(e, StepProgressed) and "subphase" in e.details:
            out[f"sub.{e.details['subphase']}"] = e.details.get("duration_s")
        elif isinstance(e, ArtifactRestored):
            out.update(warm="hit", restore_s=e.seconds, restore_bytes=e.bytes)
        elif isinstance(e, ArtifactMissed):
            out.update(warm=f"miss:{e.reason}")
        elif isinstance(e, ArtifactPublished):
            out.update(publish_s=e.seconds, publish_bytes=e.bytes)
    return out


def summarize(rows: list[dict[str, Any]]) -> None:
    subphases = sorted({k for r in rows for k in r if k.startswith("sub.")})
    keys = ["deploy_s", "engine_init", "download", *subphases]
    print("\n| median over rounds | cold | warm | warm / cold |\n|---|---|---|---|")
    for key in keys:
        cold = [r[key] for r in rows if r["arm"] == "cold" and isinstance(r.get(key), float | int)]
        warm = [r[key] for r in rows if r["arm"] == "warm" and isinstance(r.get(key), float | int)]
        if not cold or not warm:
            continue
        c, w = statistics.median(cold), statistics.median(warm)
        print(f"| {key} | {c:.2f} s | {w:.2f} s | {w / c:.2f} |" if c else f"| {key} | - |")
    for arm in ("cold", "warm"):
        print(f"{arm}: " + ", ".join(str(r.get("warm")) for r in rows if r["arm"] == arm))


def restore_cost(megabytes: int, workdir: pathlib.Path) -> None:
    from llm_init.artifacts import open_artifact_store, publish, restore
    from tests.support.s3 import running_moto_s3

    source = workdir / "artifact-src"
    for i in range(max(1, megabytes // 8)):
        path = source / "torch_compile_cache" / f"part{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(8 << 20))
    size_mb = sum(p.stat().st_size for p in source.rglob("*") if p.is_file()) / 1e6
    copies = []
    for i in range(3):
        dest = workdir / f"copy{i}"
        started = time.perf_counter()
        shutil.copytree(source, dest)
        copies.append(time.perf_counter() - started)
        shutil.rmtree(dest)
    copy_s = statistics.median(copies)
    print(f"\n| {size_mb:.0f} MB artifact | publish s | restore s | restore s/MB | "
          f"restore / plain copy |\n|---|---|---|---|---|")
    print(f"| shutil.copytree | - | {copy_s:.2f} | {copy_s / size_mb * 1000:.1f} ms | 1.00 |")
    with running_moto_s3() as s3:
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        s3.client().create_bucket(Bucket=bucket)
        for label, url, endpoint in (("directory", f"file://{workdir / 'dir-store'}", None),
                                     ("S3 (moto, loopback)", f"s3://{bucket}/x",
                                      s3.endpoint_url)):
            store = open_artifact_store(url, endpoint_url=endpoint)
            key = uuid.uuid4().hex[:24]
            published = publish(store, key, {}, source, max_bytes=None)
            times = []
            for i in range(3):
                dest = workdir / f"restored-{i}"
                outcome = restore(store, key, {}, dest)
                assert outcome.result == "hit", outcome
                times.append(outcome.seconds)
                shutil.rmtree(dest)
            r = statistics.median(times)
            print(f"| {label} | {published.seconds:.2f} | {r:.2f} | "
                  f"{r / size_mb * 1000:.1f} ms | {r / copy_s:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--restore-mb", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llm-init-warm-bench-") as tmp:
        workdir = pathlib.Path(tmp)
        if not args.skip_serve:
            summarize(serve_rounds(args.rounds, workdir))
        restore_cost(args.restore_mb, workdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
