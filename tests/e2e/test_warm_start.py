"""Warm starts end to end: real Ray Serve, vLLM's CPU build with compilation on
(``enforce_eager=False``), an S3-compatible store (moto's server) and four deployments, each
on a "node" of its own (its own download cache and local compile cache):

1. cold: nothing in the store, vLLM compiles; the cache is published after the replica is ready;
2. warm: the model lies at another path, the artifact is restored, compilation is shorter;
3. corrupt: the published archive is damaged; a miss with its reason, the start succeeds;
4. unreachable: no store at the endpoint; a miss within the restore's time limit;
5. Ray's manual recipe, llm-init's warm start off: the cold start's compile cache uploaded by
   hand, Ray's ``CloudDownloader`` callback fetching it and ``compilation_config.cache_dir``
   pointing at it, as Ray's deployment-initialization guide shows.

Each compile-on start takes minutes on a 2-core machine, so they share one module.
"""

from __future__ import annotations

import pathlib
import shutil
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from llm_init import read_events
from llm_init.events import (
    ArtifactMissed,
    ArtifactPublished,
    ArtifactPublishSkipped,
    ArtifactRestored,
    Event,
    HookCompleted,
    PhaseCompleted,
    StepProgressed,
)
from llm_init.stores import open_store
from tests.e2e.conftest import Cluster
from tests.e2e.support import replica_pythonpath
from tests.support.s3 import ENV, MotoS3

# Four compile-on starts and one warm one take 15-25 minutes on a loaded 2-core machine.
pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.vllm, pytest.mark.timeout(3000)]

APP = "warm"
UNREACHABLE_TIMEOUT_S = 20.0
CLOUD_DOWNLOADER = "ray.llm._internal.common.callbacks.cloud_downloader.CloudDownloader"


@dataclass
class Start:
    name: str
    events: list[Event]
    deploy_s: float  # serve.run until the first completion answered
    published: Event | None = None

    def phase_s(self, phase: str) -> float:
        return next(e.duration_s for e in self.events
                    if isinstance(e, PhaseCompleted) and e.phase == phase)

    def subphase_s(self, name: str) -> float | None:
        found = [e.details.get("duration_s") for e in self.events
                 if isinstance(e, StepProgressed) and e.details.get("subphase") == name]
        return float(found[-1]) if found and isinstance(found[-1], int | float) else None

    def of_type(self, kind: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]


@dataclass
class Starts:
    by_name: dict[str, Start] = field(default_factory=dict)
    recipe_files: list[str] = field(default_factory=list)  # what Ray's recipe put in place


def _completion(base_url: str) -> None:
    body = b'{"model": "tiny", "prompt": "hello", "max_tokens": 4}'
    request = urllib.request.Request(f"{base_url}/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200


def _events(store_url: str, wait_for_publish: bool) -> list[Event]:
    deadline = time.monotonic() + (240 if wait_for_publish else 0)
    while True:
        store = open_store(store_url, create=False)
        try:
            (init_id,) = store.list_init_ids()
            events = read_events(store, init_id)
        finally:
            store.close()
        done = any(isinstance(e, ArtifactPublished | ArtifactPublishSkipped) for e in events)
        if done or time.monotonic() > deadline:
            return events
        time.sleep(2)


def _deploy(cluster: Cluster, model: pathlib.Path, workdir: pathlib.Path, name: str,
            artifact_store: dict[str, Any] | None, *, wait_for_publish: bool,
            engine_kwargs: dict[str, Any] | None = None, llm_config: dict[str, Any] | None = None,
            env: dict[str, str] | None = None) -> Start:
    from ray import serve

    from llm_init.demo.run import FAST_ENGINE_KWARGS, app_args
    from llm_init.serve import build_openai_app

    node = workdir / name
    store_url = f"sqlite:///{node / 'events.sqlite'}"
    node.mkdir()
    settings: dict[str, Any] = {"download_options": {"cache_dir": str(node / "models")}}
    if artifact_store is not None:
        settings["artifact_store"] = {**artifact_store, "cache_dir": str(node / "warm"),
                                      "model_link_dir": str(workdir / "links")}
    args = app_args(
        model, event_store=store_url, settings=settings,
        llm_config={"engine_kwargs": {**FAST_ENGINE_KWARGS, "enforce_eager": False,
                                      **(engine_kwargs or {})},
                    **(llm_config or {})},
        env={"PYTHONPATH": replica_pythonpath(), **ENV,
             # inductor's own default cache (C++ headers) counts as local to the node
             "TORCHINDUCTOR_CACHE_DIR": str(node / "inductor"), **(env or {})})
    started = time.perf_counter()
    serve.run(build_openai_app(args), name=APP, route_prefix="/")
    _completion(cluster.base_url)
    deploy_s = time.perf_counter() - started
    events = _events(store_url, wait_for_publish)
    serve.delete(APP)
    return Start(name, events, deploy_s)


def _rays_recipe(cluster: Cluster, workdir: pathlib.Path, s3: MotoS3, bucket: str) -> Start:
    """Ray's manual recipe, by hand: upload the directory vLLM named in the cold start's log
    (on the CPU build "saved AOT compiled function to .../torch_compile_cache/torch_aot_compile/
    <hash>/rank_0_0/model"; on GPUs "Using cache directory: .../torch_compile_cache/<hash>/..."),
    then deploy with Ray's ``CloudDownloader`` fetching it to the node's path and
    ``compilation_config.cache_dir`` pointing there. vLLM's cache key includes the model's path,
    and Ray's recipe assumes it is the same on every node: the engine loads the model from the
    path the cold start's engine saw (llm-init's model link, made a plain directory here)."""
    (compiled,) = (workdir / "cold" / "warm").glob("*/torch_compile_cache/torch_aot_compile/*")
    uri = s3.upload_dir(compiled, f"{bucket}/ray-recipe/{compiled.name}")
    (link,) = (workdir / "links").iterdir()
    target = link.resolve()
    link.unlink()
    shutil.copytree(target, link)
    vllm_cache = workdir / "ray-recipe" / "vllm"
    local = vllm_cache / "torch_compile_cache" / "torch_aot_compile" / compiled.name
    return _deploy(
        cluster, link, workdir, "ray-recipe", None, wait_for_publish=False,
        engine_kwargs={"compilation_config": {"cache_dir": str(local)}},
        llm_config={"callback_config": {"callback_class": CLOUD_DOWNLOADER,
                                        "callback_kwargs": {"paths": [[uri, str(local)]]}}},
        env={"VLLM_CACHE_ROOT": str(vllm_cache), "AWS_ENDPOINT_URL_S3": s3.endpoint_url})


@pytest.fixture(scope="module")
def starts(cluster: Cluster, tiny_model: pathlib.Path,
           tmp_path_factory: pytest.TempPathFactory) -> Starts:
    workdir = tmp_path_factory.mktemp("warm")
    bucket = f"warm-{uuid.uuid4().hex[:8]}"
    found = Starts()
    with MotoS3() as s3:
        s3.client().create_bucket(Bucket=bucket)
        store = {"url": f"s3://{bucket}/artifacts", "endpoint_url": s3.endpoint_url}
        found.by_name["cold"] = _deploy(cluster, tiny_model, workdir, "cold", store,
                                        wait_for_publish=True)
        found.by_name["warm"] = _deploy(cluster, tiny_model, workdir, "warm", store,
                                        wait_for_publish=False)
        client = s3.client()
        for obj in client.list_objects_v2(Bucket=bucket)["Contents"]:
            if obj["Key"].endswith(".tar"):
                data = bytearray(client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
                data[len(data) // 2] ^= 0xFF
                client.put_object(Bucket=bucket, Key=obj["Key"], Body=bytes(data))
        found.by_name["corrupt"] = _deploy(cluster, tiny_model, workdir, "corrupt", store,
                                           wait_for_publish=False)
        dead = {"url": f"s3://{bucket}/artifacts", "endpoint_url": "http://127.0.0.1:9",
                "timeout_s": UNREACHABLE_TIMEOUT_S}
        found.by_name["unreachable"] = _deploy(cluster, tiny_model, workdir, "unreachable",
                                               dead, wait_for_publish=False)
        # last: it turns the model link the others share into a plain directory
        found.by_name["ray-recipe"] = _rays_recipe(cluster, workdir, s3, bucket)
        found.recipe_files = sorted(
            p.name for p in (workdir / "ray-recipe" / "vllm").rglob("*.so"))
    for start in found.by_name.values():
        print(f"{start.name}: deploy to first completion {start.deploy_s:.1f} s, engine_init "
              f"{start.phase_s('engine_init'):.1f} s, engine_config "
              f"{start.subphase_s('engine_config')} s, init_engine "
              f"{start.subphase_s('init_engine')} s, download "
              f"{start.phase_s('download'):.2f} s")
    return found


def test_cold_start_misses_then_publishes(starts: Starts) -> None:
    """The first start finds nothing, compiles, and publishes its cache after it is ready."""
    cold = starts.by_name["cold"]
    (missed,) = cold.of_type(ArtifactMissed)
    (published,) = cold.of_type(ArtifactPublished)
    assert missed.reason == "no_match"
    assert published.key == missed.key
    assert published.bytes > 0


def test_warm_start_restores_and_compiles_less(starts: Starts) -> None:
    """The second start, its model at another path, restores the artifact before the engine
    starts; vLLM's model inspection (engine_config) and its compiling profile run (init_engine:
    on the CPU build, compilation happens inside it, with no torch.compile line of its own) are
    shorter than the cold start's, and so is the engine_init phase."""
    cold, warm = starts.by_name["cold"], starts.by_name["warm"]
    (restored,) = warm.of_type(ArtifactRestored)
    assert restored.key == cold.of_type(ArtifactPublished)[0].key
    for subphase in ("engine_config", "init_engine"):
        cold_s, warm_s = cold.subphase_s(subphase), warm.subphase_s(subphase)
        assert cold_s is not None, subphase
        assert warm_s is not None, subphase
        assert warm_s < cold_s, subphase
    assert warm.phase_s("engine_init") < cold.phase_s("engine_init")


def test_a_corrupt_artifact_is_a_miss_and_the_start_succeeds(starts: Starts) -> None:
    """A damaged archive: a miss with reason corrupt; the engine compiles and serves."""
    (missed,) = starts.by_name["corrupt"].of_type(ArtifactMissed)
    assert missed.reason == "corrupt"
    assert not starts.by_name["corrupt"].of_type(ArtifactRestored)


def test_an_unreachable_store_is_a_bounded_miss(starts: Starts) -> None:
    """No store at the endpoint: a miss (unreachable or timeout) within the restore's limit."""
    (missed,) = starts.by_name["unreachable"].of_type(ArtifactMissed)
    assert missed.reason in ("unreachable", "timeout")
    assert missed.seconds <= UNREACHABLE_TIMEOUT_S + 2


def test_rays_manual_recipe_still_works(starts: Starts) -> None:
    """Ray's CloudDownloader callback with compilation_config.cache_dir, unchanged and with
    llm-init's warm start off, runs as a recorded Ray hook, puts the cache where vLLM reads it
    and makes vLLM's compiling profile run (init_engine) shorter than the cold start's, and
    the replica serves."""
    cold, recipe = starts.by_name["cold"], starts.by_name["ray-recipe"]
    (hook,) = [e for e in recipe.of_type(HookCompleted)
               if e.ray_hook == "on_before_download_model_files_distributed"]
    assert hook.callback.endswith("CloudDownloader]")
    assert not recipe.of_type(ArtifactRestored)
    assert not recipe.of_type(ArtifactMissed)
    assert starts.recipe_files, "CloudDownloader fetched nothing"
    cold_s, recipe_s = cold.subphase_s("init_engine"), recipe.subphase_s("init_engine")
    assert cold_s is not None
    assert recipe_s is not None
    assert recipe_s < cold_s
