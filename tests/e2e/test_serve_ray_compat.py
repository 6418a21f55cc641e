"""A Ray Serve LLM user's application under llm-init, end to end: Ray's behaviour unchanged,
llm-init's record added.

One application (module scope) holds two models, deployed together to save a deploy: one from
Ray's own config dict with a Ray callback whose first hook fails under
``raise_error_on_callback=False``, and one from llm-init's own ``llm_init.LLMConfig`` as the
README builds it. Both use the real download step on a local directory, which Ray uses in place.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from dataclasses import dataclass
from typing import Any

import pytest

from llm_init import HOOK_NAMES, read_events, replay
from llm_init.events import (
    Event,
    HookCompleted,
    HookFailed,
    HookStarted,
    StepProgressed,
)
from llm_init.stores import open_store
from llm_init.telemetry import names
from tests.e2e.conftest import Cluster
from tests.e2e.support import AllHooks, replica_pythonpath
from tests.support.otlp_receiver import OTLPReceiver, ReceivedSpan

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.vllm]

APP = "compat"
RAY_MODEL, OWN_MODEL = "ray-tiny", "own-tiny"
RAY_ADAPTER = "llm_init.serve.ray_callbacks.RayCallback[tests.e2e.support.FailingRayCallback]"


@dataclass
class Deployment:
    workdir: pathlib.Path
    cluster: Cluster
    receiver: OTLPReceiver
    sources: dict[str, pathlib.Path]
    cache: pathlib.Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.cluster.http_port}/{APP}/v1"

    def events(self, model: str) -> list[Event]:
        store = open_store(f"sqlite:///{self.workdir / model}.sqlite", create=False)
        try:
            (init_id,) = store.list_init_ids()
            return read_events(store, init_id)
        finally:
            store.close()

    def ray_log(self) -> list[dict[str, Any]]:
        text = (self.workdir / "ray-hooks.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]


@pytest.fixture(scope="module")
def deployment(cluster: Cluster, tiny_model: pathlib.Path,
               tmp_path_factory: pytest.TempPathFactory) -> Any:
    from ray import serve

    import llm_init
    from llm_init.demo.run import FAST_ENGINE_KWARGS, replica_env
    from llm_init.serve import build_openai_app

    workdir = tmp_path_factory.mktemp(APP)
    sources = {m: shutil.copytree(tiny_model, workdir / f"source-{m}")
               for m in (RAY_MODEL, OWN_MODEL)}
    cache = workdir / "llm-init-cache"
    receiver = OTLPReceiver().start()

    def env(model: str) -> dict[str, str]:
        return replica_env({
            "PYTHONPATH": replica_pythonpath(), "LLM_INIT_CACHE_DIR": str(cache),
            "LLM_INIT_EVENT_STORE": f"sqlite:///{workdir / model}.sqlite",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_BSP_SCHEDULE_DELAY": "200"})

    ray_config = {  # as in Ray's callbacks guide, with Ray's own keys only
        "model_loading_config": {"model_id": RAY_MODEL,
                                 "model_source": str(sources[RAY_MODEL])},
        "engine_kwargs": dict(FAST_ENGINE_KWARGS),
        "placement_group_config": {"bundles": [{"CPU": 1}]},
        "runtime_env": {"env_vars": env(RAY_MODEL)},
        "log_engine_metrics": False,
        "callback_config": {"callback_class": "tests.e2e.support.FailingRayCallback",
                            "callback_kwargs": {"log": str(workdir / "ray-hooks.jsonl")},
                            "raise_error_on_callback": False},
    }
    own_config = llm_init.LLMConfig(  # as the README builds it
        model_id=OWN_MODEL, model_source=str(sources[OWN_MODEL]),
        engine_kwargs=dict(FAST_ENGINE_KWARGS), placement_bundles=[{"CPU": 1}],
        runtime_env={"env_vars": env(OWN_MODEL)},
        callback_class=AllHooks, callback_kwargs={"log": str(workdir / "own-hooks.jsonl")})
    app = build_openai_app({
        "llm_configs": [ray_config, own_config],
        "ingress_deployment_config": {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}},
    })
    try:
        serve.run(app, name=APP, route_prefix=f"/{APP}")
        yield Deployment(workdir, cluster, receiver, sources, cache)
    finally:
        receiver.close()
        serve.delete(APP)


def complete(deployment: Deployment, model: str) -> Any:
    from openai import OpenAI

    client = OpenAI(base_url=deployment.base_url, api_key="none")
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8,
        temperature=0)


def test_own_llm_config_deploys_and_answers_the_openai_client(deployment):
    """llm_init.LLMConfig in build_openai_app serves beside Ray's config, under its id."""
    from openai import OpenAI

    client = OpenAI(base_url=deployment.base_url, api_key="none")
    assert sorted(m.id for m in client.models.list().data) == [OWN_MODEL, RAY_MODEL]
    chat = complete(deployment, OWN_MODEL)
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage.completion_tokens > 0


def test_own_llm_configs_callbacks_ran_as_the_models_llm_init_callbacks(deployment):
    """Its callback_class ran every hook, with its kwargs, in the model's replica only."""
    events = deployment.events(OWN_MODEL)
    ours = [e.hook for e in events
            if isinstance(e, HookCompleted) and e.callback == "tests.e2e.support.AllHooks"]
    assert ours == list(HOOK_NAMES)
    assert replay(events).model_id == OWN_MODEL
    assert not [e for e in deployment.events(RAY_MODEL)
                if isinstance(e, HookCompleted) and e.callback.endswith("AllHooks")]


def test_a_failing_ray_hook_is_recorded_as_failed_and_the_replica_serves(deployment):
    """raise_error_on_callback=False: HookFailed with Ray's error text, the next Ray hook
    still ran, the initialization completed and the model answers."""
    events = deployment.events(RAY_MODEL)
    (failed,) = [e for e in events if isinstance(e, HookFailed)]
    assert (failed.callback, failed.ray_hook, failed.aborted) == (
        RAY_ADAPTER, "on_before_node_init", False)
    assert failed.message == ("Exception: Error running callback method 'on_before_node_init' "
                              "on FailingRayCallback: no accelerator quota today")
    assert [c["hook"] for c in deployment.ray_log()] == ["on_before_node_init",
                                                        "on_after_node_init"]
    assert replay(events).outcome == "completed"
    assert complete(deployment, RAY_MODEL).usage.completion_tokens > 0


def test_ray_hook_names_are_in_the_log_and_the_spans(deployment):
    """Only the two Ray hooks the class overrides were called, each recorded and traced under
    its Ray name; the failed one's span has status ERROR."""
    events = deployment.events(RAY_MODEL)
    recorded = [(type(e).__name__, e.hook, e.ray_hook) for e in events
                if isinstance(e, HookStarted | HookCompleted | HookFailed)
                and e.callback == RAY_ADAPTER]
    assert recorded == [
        ("HookStarted", "on_pre_initialization", "on_before_node_init"),
        ("HookFailed", "on_pre_initialization", "on_before_node_init"),
        ("HookStarted", "on_post_download", "on_after_node_init"),
        ("HookCompleted", "on_post_download", "on_after_node_init")]

    def ray_spans(spans: list[ReceivedSpan]) -> dict[str, ReceivedSpan]:
        return {s.attributes[names.ATTR_RAY_HOOK]: s for s in spans
                if s.attributes.get(names.ATTR_CALLBACK) == RAY_ADAPTER}

    spans = ray_spans(deployment.receiver.wait_for_spans(
        lambda found: len(ray_spans(found)) == 2, timeout=30))
    assert sorted(spans) == ["on_after_node_init", "on_before_node_init"]
    assert spans["on_before_node_init"].status_code == 2  # ERROR
    assert "no accelerator quota today" in spans["on_before_node_init"].status_message
    assert spans["on_after_node_init"].status_code != 2
    assert spans["on_before_node_init"].name == names.SPAN_HOOK_PREFIX + "on_pre_initialization"


@pytest.mark.parametrize("model", [RAY_MODEL, OWN_MODEL])
def test_a_local_source_is_used_in_place(deployment, model):
    """As Ray does: the download step's result is the source directory itself, the engine
    loaded from it (Ray's on_after_node_init saw it too), nothing went to llm-init's cache."""
    source = str(deployment.sources[model].resolve())
    events = deployment.events(model)
    result = replay(events).state["download_result"]
    assert (result["path"], result["bytes_fetched"]) == (source, 0)
    assert [n["resolved_from"] for n in result["nodes"]] == ["in place"]
    loaded = [e.details["model"] for e in events
              if isinstance(e, StepProgressed) and "model" in e.details]
    assert loaded == [source]
    if model == RAY_MODEL:
        assert deployment.ray_log()[-1]["hf_model_id"] == source
    assert not deployment.cache.exists()
