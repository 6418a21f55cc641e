"""``llm-init warm build`` end to end: the real CLI in a process of its own builds the tiny
model's artifact (vLLM's CPU build, compilation on) into moto's S3 server, on a "node" of its
own; then the first replica of a real Serve deployment, on another node with empty caches,
restores it and serves. One engine start and one deploy: a few minutes on two cores."""

from __future__ import annotations

import os
import pathlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from llm_init import read_events
from llm_init.demo.warm import DemoBuild
from llm_init.events import ArtifactMissed, ArtifactRestored, Event, StepProgressed
from llm_init.stores import open_store
from tests.e2e.conftest import Cluster
from tests.e2e.support import replica_pythonpath
from tests.support.s3 import ENV, MotoS3

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.vllm, pytest.mark.timeout(1800)]


@dataclass
class Rollout:
    build: DemoBuild
    build_events: list[Event]
    replica_events: list[Event]
    deploy_s: float
    config: pathlib.Path  # the Serve config the build read


def _events(store_url: str, init_id: str) -> list[Event]:
    store = open_store(store_url, create=False)
    try:
        return list(read_events(store, init_id))
    finally:
        store.close()


def _init_engine_s(events: list[Event]) -> float | None:
    found = [e.details.get("duration_s") for e in events if isinstance(e, StepProgressed)
             and e.details.get("subphase") == "init_engine"]
    return float(found[-1]) if found and isinstance(found[-1], int | float) else None


@pytest.fixture(scope="module")
def rollout(cluster: Cluster, tiny_model: pathlib.Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rollout]:
    from llm_init.demo.warm import build_on_node, deploy

    workdir = tmp_path_factory.mktemp("warm-build")
    bucket = f"build-{uuid.uuid4().hex[:8]}"
    env = {**ENV, "PYTHONPATH": replica_pythonpath()}
    with MotoS3() as s3, pytest.MonkeyPatch.context() as patch:
        for name, value in ENV.items():
            patch.setenv(name, value)
        s3.client().create_bucket(Bucket=bucket)
        store = {"url": f"s3://{bucket}/warm", "endpoint_url": s3.endpoint_url}
        built = build_on_node(workdir, "builder", tiny_model, store, env)
        assert built.returncode == 0, built.output
        build_events = _events(built.store, built.outcome["init_id"])
        start = deploy(workdir, "first", tiny_model, cluster.http_port, store, env,
                       wait_for_publish=False)
        yield Rollout(built, build_events, _events(start.store, start.init_id), start.deploy_s,
                      workdir / "builder" / "serve-config.yaml")
    print(f"warm build {built.build_s:.1f} s (engine {built.outcome['engine_s']:.1f} s), first "
          f"replica deploy to first completion {start.deploy_s:.1f} s")


def test_warm_build_publishes_the_artifact_through_the_cli(rollout: Rollout) -> None:
    """`llm-init warm build <serve config>` starts the engine once, publishes its cache and
    prints the key, bytes and seconds as JSON, exiting 0."""
    outcome = rollout.build.outcome
    assert outcome["result"] == "published", rollout.build
    assert outcome["bytes"] > 0
    assert len(outcome["key"]) == 24
    assert outcome["seconds"] >= outcome["engine_s"] > 0


def test_the_first_replica_after_a_build_restores_its_artifact_and_serves(
        rollout: Rollout) -> None:
    """The rollout's first replica, on a node with empty caches, computes the key the build
    published and restores it (the deploy fixture also waited for a completion)."""
    (restored,) = [e for e in rollout.replica_events if isinstance(e, ArtifactRestored)]
    assert not [e for e in rollout.replica_events if isinstance(e, ArtifactMissed)]
    assert restored.key == rollout.build.outcome["key"]


def test_the_first_replica_after_a_build_compiles_less_than_the_build(rollout: Rollout) -> None:
    """vLLM's compiling profile run (init_engine) in the first replica is shorter than in the
    build that compiled: the restored cache is one vLLM uses, not only one with the same key."""
    built, replica = _init_engine_s(rollout.build_events), _init_engine_s(rollout.replica_events)
    assert built is not None
    assert replica is not None
    assert replica < built * 0.75, (replica, built)


def test_the_build_is_recorded_as_an_initialization_labelled_warm_build(
        rollout: Rollout) -> None:
    """The build's engine start is in its event store like any start, labelled
    purpose=warm-build, so fleet queries can tell it from a replica's."""
    first = rollout.build_events[0]
    assert getattr(first, "labels", {}).get("purpose") == "warm-build"


def test_a_build_on_ray_of_an_artifact_the_store_has_succeeds_without_publishing(
        rollout: Rollout) -> None:
    """`build(..., on_ray=True)` runs the initialization in a Ray task (another process),
    restores the artifact the CLI build published, does not start an engine for it, and
    reports it as existing, which is success."""
    import json

    from llm_init.artifacts import build
    from llm_init.artifacts.build import serve_targets

    (target,) = serve_targets(json.loads(rollout.config.read_text(encoding="utf-8")))
    outcome = build(target.llm_config, on_ray=True, num_cpus=1, download=target.download,
                    event_store=target.event_store)
    assert (outcome.result, outcome.reason, outcome.ok) == ("skipped", "exists", True)
    assert outcome.key == rollout.build.outcome["key"]
    events = _events(target.event_store or "", outcome.init_id)
    assert getattr(events[0], "pid", None) != os.getpid()
    assert [e for e in events if isinstance(e, ArtifactRestored)]
    assert _init_engine_s(events) is None  # vLLM did not start
