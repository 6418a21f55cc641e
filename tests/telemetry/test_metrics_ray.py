"""Under Ray, the metrics go through Ray's metrics pipeline to the node's metrics endpoint."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator

import pytest

from llm_init import InMemoryEventStore, LLMConfig, initialize_node_sync
from llm_init.telemetry import names
from llm_init.telemetry.backends import RayBackend, select_backend
from tests.support.net import free_port
from tests.support.steps import local_steps

pytestmark = pytest.mark.ray


@pytest.fixture
def ray_metrics_port() -> Iterator[int]:
    """A local Ray instance exporting its metrics on a free port, every half second."""
    import ray

    port = free_port()
    ray.init(num_cpus=1, include_dashboard=False, _metrics_export_port=port,
             _system_config={"metrics_report_interval_ms": 500}, log_to_driver=False)
    try:
        yield port
    finally:
        ray.shutdown()


def scrape_until(port: int, wanted: list[str], timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            text = ""
        if all(w in text for w in wanted):
            return text
        time.sleep(0.5)
    raise TimeoutError(f"missing {[w for w in wanted if w not in text]} after {timeout} s")


def test_metrics_reach_the_ray_node_endpoint_with_ray_prefix(ray_metrics_port: int) -> None:
    """With Ray initialized the automatic backend is Ray's, and the node endpoint exports the
    phase histogram and the initialization counter under Ray's ``ray_`` prefix."""
    assert isinstance(select_backend(), RayBackend)
    initialize_node_sync(LLMConfig(model_id="ray-model"), event_store=InMemoryEventStore(),
                         steps=local_steps())
    prefix = names.RAY_METRIC_PREFIX
    text = scrape_until(ray_metrics_port, [
        f"{prefix}{names.METRIC_PHASE_DURATION}_count",
        f"{prefix}{names.METRIC_INITIALIZATIONS}",
    ])
    phases = {line.split('phase="')[1].split('"')[0] for line in text.splitlines()
              if line.startswith(f"{prefix}{names.METRIC_PHASE_DURATION}_count")
              and 'model="ray-model"' in line}
    assert phases == {"pre_initialization", "download", "placement_group", "engine_init",
                      "post_initialization"}
    counter = [line for line in text.splitlines()
               if line.startswith(f"{prefix}{names.METRIC_INITIALIZATIONS}{{")
               and 'model="ray-model"' in line and 'outcome="completed"' in line]
    assert [line.rsplit(" ", 1)[1] for line in counter] == ["1.0"]
