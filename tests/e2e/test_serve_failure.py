"""A deployment whose engine cannot start: Serve reports llm-init's failed phase, with vLLM's
own reason, and the event log holds the failure."""

from __future__ import annotations

import pathlib

import pytest

from llm_init import read_events, replay
from llm_init.events import InitializationFailed, PhaseFailed
from llm_init.stores import open_store
from tests.e2e.conftest import Cluster
from tests.e2e.support import replica_pythonpath

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.vllm]


def test_bad_engine_kwargs_fail_the_deployment_with_the_failed_phase(
        cluster: Cluster, tiny_model: pathlib.Path, tmp_path: pathlib.Path):
    """serve.run fails, the deployment's status message carries the engine phase's error
    (which quotes vLLM), and the event log has it."""
    from ray import serve

    from llm_init.demo.run import FAST_ENGINE_KWARGS, app_args
    from llm_init.serve import build_openai_app

    store = tmp_path / "events.sqlite"
    args = app_args(
        tiny_model, event_store=f"sqlite:///{store}",
        llm_config={
            "engine_kwargs": {**FAST_ENGINE_KWARGS, "max_model_len": 100_000},
            "deployment_config": {"num_replicas": 1, "max_constructor_retry_count": 1},
        },
        env={"PYTHONPATH": replica_pythonpath()})
    with pytest.raises(RuntimeError, match="Deploying application broken failed"):
        serve.run(build_openai_app(args), name="broken", route_prefix="/broken")
    try:
        status = serve.status().applications["broken"].deployments["LLMServer:tiny"]
    finally:
        serve.delete("broken")
    assert status.status == "DEPLOY_FAILED"
    assert "the engine step of phase engine_init failed" in status.message
    assert "max_model_len" in status.message

    events_store = open_store(str(store), create=False)
    try:
        init_ids = events_store.list_init_ids()
        events = read_events(events_store, init_ids[0])
    finally:
        events_store.close()
    assert len(init_ids) == 1  # one constructor attempt
    failed = [e for e in events if isinstance(e, PhaseFailed)]
    assert [e.phase for e in failed] == ["engine_init"]
    assert "100000" in failed[0].message
    assert isinstance(events[-1], InitializationFailed)
    assert replay(events).outcome == "failed"
