"""Fleets of stand-in replicas (``tests.dashboards.replica``) scraped by a real Prometheus that
loads the alert rules: as separate processes with standalone endpoints, or under Ray, whose
metrics go through Ray's metrics endpoint. Either way the mix is the same (``live``): replicas
that complete, replicas that fail in the engine step, one stuck in the placement group phase."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from llm_init.telemetry import names
from tests.dashboards import live, promql
from tests.dashboards.replica import MODEL, run_replica
from tests.support.net import free_port
from tests.support.prometheus import Prometheus, Result

MODES = ("ok",) * live.COMPLETED + ("fail",) * live.FAILED + ("stuck",) * live.STUCK


@dataclass
class Fleet:
    prom: Prometheus
    exposition: str  # the /metrics text of an endpoint after the fleet's initializations
    results: dict[tuple[str, str], Result] = field(default_factory=dict)


def _any_name(metric: str, matchers: str = "") -> str:
    return f'{{__name__=~"({names.RAY_METRIC_PREFIX})?{metric}"{matchers}}}'


def wait_for_fleet_state(prom: Prometheus) -> None:
    """Until Prometheus has scraped every finished initialization and the stuck one."""
    finished = live.COMPLETED + live.FAILED
    initializations = _any_name(names.METRIC_INITIALIZATIONS, f', model="{MODEL}"')
    placing = _any_name(names.METRIC_IN_PROGRESS, ', phase="placement_group"')
    prom.wait_for(f"sum({initializations})",
                  lambda r: bool(r) and float(r[0]["value"][1]) == finished, timeout=60)
    prom.wait_for(f"sum({placing}) == {live.STUCK}", timeout=30)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env[names.ENV_METRICS_PORT] = "off"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(promql.ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return env


@contextlib.contextmanager
def standalone_fleet(workdir: Path, binary: str) -> Iterator[Fleet]:
    """One process per replica, each serving its own /metrics. Failed replicas exit once
    scraped (a crash loop), so their series go stale before the queries run."""
    go = workdir / "go"
    ports = [free_port() for _ in MODES]
    processes: list[tuple[str, int, Path, subprocess.Popen[str]]] = []
    for mode, port in zip(MODES, ports, strict=True):
        release = workdir / f"release-{port}"
        processes.append((mode, port, release, subprocess.Popen(
            [sys.executable, "-m", "tests.dashboards.replica", "--mode", mode, "--port",
             str(port), "--go", str(go), "--release", str(release)],
            cwd=promql.ROOT, env=_env(), stdout=subprocess.PIPE, text=True)))
    prom = Prometheus([f"127.0.0.1:{p}" for p in ports], workdir, binary=binary,
                      scrape_interval="500ms", rule_files=[promql.RULES])
    try:
        prom.start()
        # Every replica is scraped before its download starts, so its progress is too.
        prom.wait_for("count(up == 1)", lambda r: bool(r) and r[0]["value"][1] == str(len(ports)))
        go.touch()
        wait_for_fleet_state(prom)
        exposition = scrape(next(p for m, p, _, _ in processes if m == "ok"))
        for mode, port, release, process in processes:
            if mode == "fail":
                release.touch()
                process.wait(10)
                prom.wait_for(f'up{{instance="127.0.0.1:{port}"}} == 0')
        yield Fleet(prom, exposition)
    finally:
        for _, _, release, process in processes:
            release.touch()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        prom.close()


@contextlib.contextmanager
def ray_fleet(workdir: Path, binary: str) -> Iterator[Fleet]:
    """The replicas' initializations in threads of a Ray driver (Ray initialized, so metrics
    go through Ray's pipeline); Prometheus scrapes the node's metrics endpoint, where the names
    carry Ray's prefix and Ray's labels. Threads rather than tasks: a Ray worker per replica
    would cost seconds each on a small machine, and the naming is the same."""
    import ray

    from llm_init.telemetry.metrics import MetricsCallback

    port = free_port()
    go, release = workdir / "go", workdir / "release"
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
             _metrics_export_port=port, _system_config={"metrics_report_interval_ms": 500})
    prom = Prometheus([f"127.0.0.1:{port}"], workdir, binary=binary, scrape_interval="500ms",
                      rule_files=[promql.RULES])
    pool = ThreadPoolExecutor(len(MODES))
    try:
        prom.start()
        runs = [pool.submit(run_replica, mode, go, release, MetricsCallback("ray"))
                for mode in MODES]
        downloading = _any_name(names.METRIC_IN_PROGRESS, ', phase="download"')
        prom.wait_for(f"sum({downloading}) == {len(MODES)}", timeout=60)
        go.touch()
        outcomes = [r.result(60) for r, m in zip(runs, MODES, strict=True) if m != "stuck"]
        assert sorted(outcomes) == sorted(["completed"] * live.COMPLETED
                                          + ["failed"] * live.FAILED)
        wait_for_fleet_state(prom)
        time.sleep(1.0)  # one more export and scrape, so every series is at its final value
        yield Fleet(prom, scrape(port))
    finally:
        release.touch()
        pool.shutdown(wait=True)
        ray.shutdown()
        prom.close()
