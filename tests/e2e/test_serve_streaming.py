"""Streaming weights from S3 as Ray Serve LLM does, under llm-init, end to end: real Ray Serve,
vLLM's CPU build with RunAI's streamer, moto's S3 server on loopback.

Two applications deployed together (to share one wait): one built by llm-init's
``build_openai_app``, one by Ray's own builder with llm-init's engine class named in the
runtime environment. Both stream the tiny model from the bucket with ``runai_streamer``.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from llm_init import read_events, replay
from llm_init.events import Event, StepProgressed, WeightsRouteChosen
from llm_init.stores import open_store
from tests.e2e.conftest import Cluster
from tests.e2e.support import replica_pythonpath
from tests.support.s3 import ENV, MotoS3, running_moto_s3

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.vllm]

OWN, RAYS = "stream-own", "stream-ray"  # the application (and model) names
REASON = "weights streamed by vLLM: load_format=runai_streamer"


@dataclass
class Streamed:
    workdir: pathlib.Path
    cluster: Cluster
    source: str

    def base_url(self, app: str) -> str:
        return f"http://127.0.0.1:{self.cluster.http_port}/{app}/v1"

    def cache(self, app: str) -> pathlib.Path:
        return self.workdir / f"cache-{app}"

    def events(self, app: str) -> list[Event]:
        store = open_store(f"sqlite:///{self.workdir / app}.sqlite", create=False)
        try:
            (init_id,) = store.list_init_ids()
            return read_events(store, init_id)
        finally:
            store.close()


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[MotoS3]:
    with running_moto_s3() as server:
        yield server


@pytest.fixture(scope="module")
def streamed(cluster: Cluster, tiny_model: pathlib.Path, moto_s3: MotoS3,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Streamed]:
    from ray import serve
    from ray.serve.llm import LLMConfig
    from ray.serve.llm import build_openai_app as ray_build_openai_app

    from llm_init.demo.run import FAST_ENGINE_KWARGS, replica_env
    from llm_init.serve import build_openai_app
    from llm_init.serve.builder import ENGINE_CLS_ENV, ENGINE_CLS_PATH

    workdir = tmp_path_factory.mktemp("streamed")
    source = moto_s3.upload_dir(tiny_model, "models/tiny")

    def config(app: str) -> dict[str, Any]:
        env = replica_env({
            "PYTHONPATH": replica_pythonpath(), **ENV,
            "AWS_ENDPOINT_URL": moto_s3.endpoint_url,
            "RUNAI_STREAMER_S3_USE_VIRTUAL_ADDRESSING": "0",
            "VLLM_ASSETS_CACHE": str(workdir / f"vllm-assets-{app}"),
            "LLM_INIT_CACHE_DIR": str(workdir / f"cache-{app}"),
            "LLM_INIT_EVENT_STORE": f"sqlite:///{workdir / app}.sqlite"})
        return {"model_loading_config": {"model_id": app, "model_source": source},
                "engine_kwargs": {**FAST_ENGINE_KWARGS, "load_format": "runai_streamer"},
                "placement_group_config": {"bundles": [{"CPU": 1}]},
                "runtime_env": {"env_vars": env}, "log_engine_metrics": False}

    ingress = {"num_replicas": 1, "ray_actor_options": {"num_cpus": 0}}
    own_app = build_openai_app({"llm_configs": [config(OWN)],
                                "ingress_deployment_config": ingress})
    rays_config = config(RAYS)
    rays_config["runtime_env"]["env_vars"][ENGINE_CLS_ENV] = ENGINE_CLS_PATH
    rays_app = ray_build_openai_app({"llm_configs": [LLMConfig(**rays_config)],
                                     "ingress_deployment_config": ingress})
    try:
        serve.run_many([serve.RunTarget(own_app, name=OWN, route_prefix=f"/{OWN}"),
                        serve.RunTarget(rays_app, name=RAYS, route_prefix=f"/{RAYS}")])
        yield Streamed(workdir, cluster, source)
    finally:
        for app in (OWN, RAYS):
            serve.delete(app)


def files_under(path: pathlib.Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


@pytest.mark.parametrize("app", [OWN, RAYS])
def test_a_streamed_deploy_answers_the_openai_client(streamed, app):
    """Built by llm-init's builder or by Ray's with llm-init's engine class, the streamed
    model answers a chat completion."""
    from openai import OpenAI

    client = OpenAI(base_url=streamed.base_url(app), api_key="none")
    chat = client.chat.completions.create(
        model=app, messages=[{"role": "user", "content": "Hello!"}], max_tokens=8,
        temperature=0)
    assert chat.usage is not None
    assert chat.usage.completion_tokens > 0


@pytest.mark.parametrize("app", [OWN, RAYS])
def test_no_weight_file_reached_llm_init_s_cache(streamed, app):
    """llm-init's cache holds no safetensors file (nothing at all: vLLM fetched config and
    tokenizer itself), and vLLM's own copy of the small files holds no weights either."""
    cache = streamed.cache(app)
    assert not [f for f in (files_under(cache) if cache.exists() else [])
                if f.endswith(".safetensors")]
    assets = files_under(streamed.workdir / f"vllm-assets-{app}")
    assert any(f.endswith("config.json") for f in assets)
    assert not [f for f in assets if f.endswith(".safetensors")]


@pytest.mark.parametrize("app", [OWN, RAYS])
def test_vllm_was_given_the_bucket_uri(streamed, app):
    """The engine step pointed vLLM at the bucket URI, not at a local directory."""
    events = streamed.events(app)
    models = [e.details["model"] for e in events
              if isinstance(e, StepProgressed) and e.step == "engine" and "model" in e.details]
    assert models == [streamed.source]
    assert replay(events).outcome == "completed"


@pytest.mark.parametrize("app", [OWN, RAYS])
def test_the_download_phase_recorded_why_it_fetched_nothing(streamed, app):
    """The log says the weights were streamed by vLLM and why, the node's mode was NONE and
    the node fetched nothing."""
    events = streamed.events(app)
    (chosen,) = [e for e in events if isinstance(e, WeightsRouteChosen)]
    assert (chosen.route, chosen.reason, chosen.source) == ("streamed", REASON, streamed.source)
    assert set(chosen.modes.values()) == {"NONE"}
    result = replay(events).state["download_result"]
    assert result["streamed_from"] == streamed.source
    assert [(n["what"], n["bytes_fetched"], n["path"]) for n in result["nodes"]] == [
        ("NONE", 0, None)]
