"""A real Prometheus server for tests: Debian's ``prometheus`` binary on a free loopback port.

    def test_scrape(start_prometheus):
        prom = start_prometheus(["127.0.0.1:9464"])          # scrapes every second
        prom.wait_for('up{job="llm-init"} == 1')
        result = prom.query("sum by (phase) (llm_init_phase_duration_seconds_count)")

``start_prometheus`` is a pytest fixture (import it into a ``conftest.py``); it skips the test when
the binary is missing, unless ``LLM_INIT_REQUIRE_PROMETHEUS`` is set (as in CI), where a missing
binary fails it. ``Prometheus`` itself works outside pytest too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.net import free_port

REQUIRE_ENV = "LLM_INIT_REQUIRE_PROMETHEUS"
Result = list[dict[str, Any]]


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


class Prometheus:
    """A Prometheus process scraping ``targets`` (``host:port``, path ``/metrics``) as job
    ``llm-init``, with its data in ``workdir``; ``url`` is its HTTP API."""

    def __init__(self, targets: Sequence[str], workdir: Path, *, scrape_interval: str = "1s",
                 binary: str | None = None, job: str = "llm-init") -> None:
        self.binary = binary or prometheus_binary() or "prometheus"
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.job = job
        self.config = workdir / "prometheus.yml"
        self.config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
        }))
        self.log = workdir / "prometheus.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Prometheus:
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                [self.binary, f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.close()
        raise TimeoutError(f"prometheus not ready after {timeout} s")

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def query(self, promql: str) -> Result:
        """An instant query's result vector: ``[{"metric": {...}, "value": [t, "v"]}, ...]``."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body}")
        result: Result = body["data"]["result"]
        return result

    def wait_for(self, promql: str, done: Callable[[Result], bool] = bool,
                 timeout: float = 20.0) -> Result:
        """Query until ``done(result)`` (default: a non-empty result); return that result."""
        deadline = time.monotonic() + timeout
        result: Result = []
        while time.monotonic() < deadline:
            result = self.query(promql)
            if done(result):
                return result
            time.sleep(0.2)
        raise TimeoutError(f"{promql!r} after {timeout} s: {result}")

    def targets(self) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as response:
            active: list[dict[str, Any]] = json.load(response)["data"]["activeTargets"]
        return active


def require_prometheus() -> str:
    """The binary's path; skips the calling test without it, or fails it when
    ``LLM_INIT_REQUIRE_PROMETHEUS`` is set."""
    binary = prometheus_binary()
    if binary is None:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"prometheus is not installed and {REQUIRE_ENV} is set")
        pytest.skip("prometheus is not installed (apt-get install prometheus)")
    return binary


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Callable[..., Prometheus]]:
    """Start Prometheus servers scraping the given targets; stopped after the test."""
    binary = require_prometheus()
    started: list[Prometheus] = []

    def start(targets: Sequence[str], **kwargs: Any) -> Prometheus:
        workdir = tmp_path / f"prometheus-{len(started)}"
        workdir.mkdir()
        prom = Prometheus(targets, workdir, binary=binary, **kwargs)
        started.append(prom)
        return prom.start()

    yield start
    for prom in started:
        prom.close()
