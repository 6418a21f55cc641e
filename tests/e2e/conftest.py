"""One local Ray cluster with Serve for the end-to-end tests, and the tiny model they serve."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from llm_init.demo.tiny_model import build_tiny_model
from tests.e2e.support import free_port


@dataclass(frozen=True)
class Cluster:
    http_port: int
    metrics_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    """Ray with 8 logical CPUs (the LLM replica takes 2) and Serve on loopback, as the demo
    starts them; shut down once this package's tests are done, before others start Ray."""
    pytest.importorskip("vllm")
    from llm_init.demo.run import local_cluster

    found = Cluster(http_port=free_port(), metrics_port=free_port())
    with local_cluster(metrics_port=found.metrics_port, http_port=found.http_port):
        yield found
