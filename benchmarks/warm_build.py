"""The first replica of a rollout, cold against after ``llm-init warm build``.

    python benchmarks/warm_build.py [--rounds 2]

One local Ray cluster, moto's S3 server on loopback as the store, the tiny random-weight Llama
with vLLM's default compilation (``enforce_eager=False``). Each round uses a new store prefix
for each arm and runs both arms, in alternating order:

- ``cold``: the rollout's first replica on an empty prefix (it compiles);
- ``built``: ``llm-init warm build <serve config>`` (the real CLI, a process of its own, on a
  "node" of its own) into an empty prefix, then the rollout's first replica on another node
  with empty local caches (it restores).

Each deploy runs from the builder call to the first completion; the event log gives
``engine_init`` and vLLM's sub-phases. The build's own time is reported apart: it is spent
before the rollout, not in it. Medians over rounds; ratios are of medians.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import statistics
import sys
import tempfile
import uuid
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rounds(count: int, workdir: pathlib.Path) -> list[dict[str, Any]]:
    from benchmarks.warm_start import facts
    from llm_init.demo.run import local_cluster
    from llm_init.demo.tiny_model import build_tiny_model
    from llm_init.demo.warm import artifact_store, build_on_node, deploy
    from tests.support.net import free_port

    for name in ("ray.serve", "ray.llm", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    model = build_tiny_model(workdir / "tiny")
    http_port = free_port()
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    rows: list[dict[str, Any]] = []
    with artifact_store(workdir) as (store, store_env), local_cluster(
            metrics_port=None, http_port=http_port):
        os.environ.update(store_env)  # the build's CLI process and this one's S3 client
        for round_no in range(count):
            arms = ["cold", "built"] if round_no % 2 == 0 else ["built", "cold"]
            for arm in arms:
                prefixed = {**store, "url": f"{store['url']}/{arm}-{round_no}-"
                            f"{uuid.uuid4().hex[:6]}"}
                row: dict[str, Any] = {"round": round_no, "arm": arm}
                if arm == "built":
                    built = build_on_node(workdir, f"r{round_no}-builder", model, prefixed,
                                          {**env, **store_env})
                    if built.returncode != 0:
                        raise SystemExit(f"warm build failed:\n{built.output}")
                    row.update(build_s=built.build_s, build_engine_s=built.outcome["engine_s"],
                               build_publish_s=built.outcome["publish_s"],
                               build_bytes=built.outcome["bytes"])
                start = deploy(workdir, f"r{round_no}-{arm}", model, http_port, prefixed,
                               {**env, **store_env}, wait_for_publish=False)
                row.update(deploy_s=start.deploy_s, **facts(start.store, start.init_id))
                row["loadavg_1m"] = os.getloadavg()[0]
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def summarize(rows: list[dict[str, Any]]) -> None:
    keys = ["deploy_s", "engine_init", "sub.engine_config", "sub.init_engine",
            "sub.engine_core_start"]
    print("\n| first replica, median over rounds | cold | after warm build | built / cold |\n"
          "|---|---|---|---|")
    for key in keys:
        cold = [r[key] for r in rows if r["arm"] == "cold" and isinstance(r.get(key), float | int)]
        built = [r[key] for r in rows if r["arm"] == "built"
                 and isinstance(r.get(key), float | int)]
        if not cold or not built:
            continue
        c, b = statistics.median(cold), statistics.median(built)
        print(f"| {key} | {c:.2f} s | {b:.2f} s | {b / c:.2f} |" if c else f"| {key} | - |")
    for arm in ("cold", "built"):
        print(f"{arm}: warm start " + ", ".join(str(r.get("warm")) for r in rows
                                                if r["arm"] == arm))
    builds = [r for r in rows if "build_s" in r]
    if builds:
        print("warm build (before the rollout), per round: " + ", ".join(
            f"{r['build_s']:.1f} s (engine {r['build_engine_s']:.1f} s, publish "
            f"{r['build_publish_s']:.2f} s, {r['build_bytes'] / 1e6:.1f} MB)" for r in builds))
    loads = [r["loadavg_1m"] for r in rows]
    print(f"1-minute load average after each deploy: {min(loads):.1f}-{max(loads):.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llm-init-warm-build-bench-") as tmp:
        summarize(rounds(args.rounds, pathlib.Path(tmp)))
    return 0


if __name__ == "__main__":
    from llm_init.ray_exit import exit_process

    # A process that started Ray ends past Ray's metric exporter (llm_init.ray_exit).
    exit_process(main())
