"""The overlapped start through Ray Serve, vLLM's CPU build and a real S3 API (moto): the
engine starts while the weights arrive and serves; a shard cut short in the store fails the
start naming it, and nothing is served."""

from __future__ import annotations

import pathlib
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from llm_init import read_events, replay
from llm_init.events import DownloadOverlapped, Event, InitializationFailed, StepProgressed
from llm_init.stores import open_store
from tests.e2e.conftest import Cluster
from tests.e2e.support import replica_pythonpath
from tests.support.s3 import ENV as S3_ENV
from tests.support.s3 import MotoS3, running_moto_s3

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.vllm]

# The tiny model's 1.2 MB of weights take about 8 s at this rate: long enough for the engine
# to be seen starting while they arrive.
BANDWIDTH = 150_000


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[MotoS3]:
    with running_moto_s3() as server:
        yield server


def deploy(app_name: str, source: str, moto_s3: MotoS3, workdir: pathlib.Path) -> Any:
    """``serve.run`` of the tiny model from ``source`` with ``overlap_weights`` on."""
    from ray import serve

    from llm_init.demo.run import app_args
    from llm_init.serve import build_openai_app

    args = app_args(
        source, event_store=f"sqlite:///{workdir / 'events.sqlite'}",
        settings={"overlap_weights": True,
                  "download_options": {"endpoint_url": moto_s3.endpoint_url,
                                       "max_bandwidth": BANDWIDTH,
                                       "cache_dir": str(workdir / "cache")}},
        llm_config={"deployment_config": {"num_replicas": 1, "max_constructor_retry_count": 1}},
        env={"PYTHONPATH": replica_pythonpath(), **S3_ENV})
    return serve.run(build_openai_app(args), name=app_name, route_prefix=f"/{app_name}")


def events_of(workdir: pathlib.Path) -> list[Event]:
    store = open_store(f"sqlite:///{workdir / 'events.sqlite'}", create=False)
    try:
        (init_id,) = store.list_init_ids()
        return read_events(store, init_id)
    finally:
        store.close()


def trail(events: list[Event]) -> list[str]:
    return [f"{e.TYPE}:{getattr(e, 'step', None) or getattr(e, 'phase', '')}" for e in events
            if e.TYPE in ("PhaseStarted", "PhaseCompleted", "StepStarted", "StepCompleted")]


def test_an_overlapped_start_serves_and_records_the_engine_starting_before_the_download_ends(
        cluster: Cluster, tiny_model: pathlib.Path, moto_s3: MotoS3,
        tmp_path: pathlib.Path) -> None:
    """The openai client gets a completion; the log has the engine step starting before the
    download step ends, vLLM loading with ``llm_init_overlap``, and the seconds saved."""
    from openai import OpenAI
    from ray import serve

    source = moto_s3.upload_dir(tiny_model, "overlap/tiny")
    try:
        deploy("overlap", source, moto_s3, tmp_path)
        client = OpenAI(base_url=f"http://127.0.0.1:{cluster.http_port}/overlap/v1",
                        api_key="none")
        chat = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hello!"}], max_tokens=8)
    finally:
        serve.delete("overlap")
    assert chat.usage.completion_tokens > 0
    events = events_of(tmp_path)
    log = trail(events)
    assert log.index("StepStarted:engine") < log.index("StepCompleted:download")
    assert log.index("PhaseStarted:engine_init") < log.index("PhaseCompleted:download")
    engine_kwargs = next(e.details["engine_kwargs"] for e in events
                         if isinstance(e, StepProgressed) and "engine_kwargs" in e.details)
    assert engine_kwargs["load_format"] == "llm_init_overlap"  # type: ignore[index,call-overload]  # a JSON mapping
    (overlapped,) = [e for e in events if isinstance(e, DownloadOverlapped)]
    assert overlapped.overlapped_s > 1.0
    r = replay(events)
    assert r.outcome == "completed"
    assert r.overlapped_s == overlapped.overlapped_s


def test_a_shard_truncated_in_the_store_fails_the_overlapped_start_naming_it(
        cluster: Cluster, tiny_model: pathlib.Path, moto_s3: MotoS3,
        tmp_path: pathlib.Path) -> None:
    """A safetensors shard cut short in the store (its own ETag and size agreeing with the cut
    bytes) fails the deploy with an error naming the file; the engine had started and loaded
    nothing, and no completion can be had."""
    from ray import serve

    cut = shutil.copytree(tiny_model, tmp_path / "cut")
    shard = cut / "model.safetensors"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size * 2 // 3])
    source = moto_s3.upload_dir(cut, "overlap/cut")
    try:
        with pytest.raises(RuntimeError, match="Deploying application overlap-cut failed"):
            deploy("overlap-cut", source, moto_s3, tmp_path)
        status = serve.status().applications["overlap-cut"].deployments["LLMServer:tiny"]
    finally:
        serve.delete("overlap-cut")
    assert status.status == "DEPLOY_FAILED"
    assert "model.safetensors" in status.message
    events = events_of(tmp_path)
    failed = events[-1]
    assert isinstance(failed, InitializationFailed)
    assert failed.phase == "download"
    assert "model.safetensors" in failed.message
    assert "truncated" in failed.message
    log = trail(events)
    assert "StepStarted:engine" in log  # the engine had started while the weights arrived
    assert not [e for e in events if e.TYPE == "ContextChanged"
                and getattr(e, "field", None) == "engine"]
    assert replay(events).outcome == "failed"
