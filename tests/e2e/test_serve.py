"""The demo's deployment, end to end: a Serve config file naming llm-init's builder, one tiny
model on the CPU, the openai client, and the event log of the replica's initialization.

One deployment (module scope) answers every test here; it also carries a Ray Serve LLM callback
in ``callback_config`` and an llm-init callback that points the download at a pre-fetched copy.
"""

from __future__ import annotations

import itertools
import json
import pathlib
import shutil
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import ray
import yaml

from llm_init import HOOK_NAMES, read_events, replay
from llm_init.events import (
    ContextChanged,
    Event,
    HeartbeatRecorded,
    HookCompleted,
    InitializationCompleted,
    PhaseSkipped,
    ReplicaReady,
    StepProgressed,
    StepStarted,
    WeightsLoaded,
)
from llm_init.stores import open_store
from tests.e2e.conftest import Cluster
from tests.e2e.support import free_port, replica_pythonpath

pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.vllm]

APP = "e2e"
RAY_ADAPTER = "llm_init.serve.ray_callbacks.RayCallback[tests.e2e.support.RecordingRayCallback]"


@dataclass
class Deployment:
    workdir: pathlib.Path
    store: str
    prefetched: pathlib.Path
    marker: pathlib.Path
    hooks_log: pathlib.Path
    ray_log: pathlib.Path
    cluster: Cluster
    serve_run_started: float
    serve_run_s: float
    statuses: list[dict[str, Any]] = field(default_factory=list)
    first_completion_s: float | None = None

    def events(self) -> list[Event]:
        store = open_store(self.store, create=False)
        try:
            (init_id,) = store.list_init_ids()
            return read_events(store, init_id)
        finally:
            store.close()


def serve_config(args: dict[str, Any]) -> str:
    """A ``serve deploy``/``serve run`` config file for llm-init's builder."""
    return yaml.safe_dump({"applications": [{
        "name": APP, "route_prefix": "/", "import_path": "llm_init.serve:build_openai_app",
        "args": args}]})


def poll_status(url: str, into: list[dict[str, Any]], stop: threading.Event) -> None:
    while not stop.wait(0.3):
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                into.append(json.loads(response.read()))
        except OSError:
            continue


@pytest.fixture(scope="module")
def deployment(cluster: Cluster, tiny_model: pathlib.Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    from ray import serve
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
    from ray.serve.schema import ServeDeploySchema

    from llm_init.demo.run import app_args

    workdir = tmp_path_factory.mktemp("serve")
    prefetched = shutil.copytree(tiny_model, workdir / "prefetched")
    status_port = free_port()
    paths = {name: workdir / name for name in ("hooks.jsonl", "ray.jsonl", "download-ran")}
    args = app_args(
        # Nothing is at the configured source: the engine can only start from the pre-fetched
        # copy the callback points at.
        workdir / "never-downloaded",
        event_store=f"sqlite:///{workdir / 'events.sqlite'}", status_port=status_port,
        settings={
            "callback_class": ["tests.e2e.support:AllHooks", "tests.e2e.support:PrefetchedModel"],
            "callback_kwargs": [{"log": str(paths["hooks.jsonl"])}, {"path": str(prefetched)}],
            "download_step": "tests.e2e.support:MustNotRun",
            "download_options": {"marker": str(paths["download-ran"])},
        },
        llm_config={"callback_config": {
            "callback_class": "tests.e2e.support.RecordingRayCallback",
            "callback_kwargs": {"log": str(paths["ray.jsonl"])}}},
        env={"PYTHONPATH": replica_pythonpath()},
    )
    config = yaml.safe_load(serve_config(args))
    ServeDeploySchema.model_validate(config)  # what `serve deploy` checks
    (app_config,) = config["applications"]
    app = call_user_app_builder_with_args_if_necessary(import_attr(app_config["import_path"]),
                                                       app_config["args"])
    statuses: list[dict[str, Any]] = []
    stop = threading.Event()
    poller = threading.Thread(target=poll_status, daemon=True, args=(
        f"http://127.0.0.1:{status_port}/status", statuses, stop))
    poller.start()
    started = time.perf_counter()
    try:
        serve.run(app, name=APP, route_prefix=app_config["route_prefix"])
    finally:
        serve_run_s = time.perf_counter() - started
        time.sleep(0.5)
        stop.set()
        poller.join()
    yield Deployment(workdir, f"sqlite:///{workdir / 'events.sqlite'}", prefetched,
                     paths["download-ran"], paths["hooks.jsonl"], paths["ray.jsonl"], cluster,
                     started, serve_run_s, statuses)
    serve.delete(APP)  # the cluster is shared: later modules deploy at the same route


def test_openai_client_gets_models_completion_and_chat(deployment):
    """The app serves /v1/models, /v1/completions and /v1/chat/completions as Ray's does."""
    from openai import OpenAI

    client = OpenAI(base_url=deployment.cluster.base_url, api_key="none")
    completion = client.completions.create(model="tiny", prompt="The model is", max_tokens=8,
                                           temperature=0)
    deployment.first_completion_s = time.perf_counter() - deployment.serve_run_started
    chat = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hello!"}], max_tokens=8,
        temperature=0)
    print(f"serve.run {deployment.serve_run_s:.1f} s; serve.run to first completion "
          f"{deployment.first_completion_s:.1f} s")
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert completion.usage.completion_tokens > 0
    assert chat.choices[0].message.role == "assistant"
    assert chat.usage.completion_tokens > 0


def test_event_log_holds_all_eight_hooks_in_order(deployment):
    """Every hook of the llm-init callback ran once, in the order of the phases."""
    events = deployment.events()
    ours = [e.hook for e in events
            if isinstance(e, HookCompleted) and e.callback == "tests.e2e.support.AllHooks"]
    assert ours == list(HOOK_NAMES)
    calls = [json.loads(line) for line in deployment.hooks_log.read_text().splitlines()]
    assert [c["hook"] for c in calls if "hook" in c] == list(HOOK_NAMES)
    # Serve's first health check comes after the initialization, and is recorded after it.
    assert [type(e) for e in events[-2:]] == [InitializationCompleted, ReplicaReady]
    r = replay(events)
    assert r.outcome == "completed"
    assert r.labels["application"] == APP
    assert r.labels["deployment"] == "LLMServer:tiny"
    assert r.labels["node_id"] == ray.get_runtime_context().get_node_id()
    assert set(r.phase_durations) == {"pre_initialization", "download", "placement_group",
                                      "engine_init", "post_initialization"}


def test_the_log_accounts_for_the_whole_serve_run(deployment):
    """Scheduling, the replica's boot, the initialization and Serve's readiness check, as the
    log records them, add up to what ``serve.run`` took: no start-up time goes unexplained."""
    r = replay(deployment.events())
    assert r.scheduling_s is not None
    assert r.boot_s is not None
    assert r.boot_s > 0
    assert r.ready_s is not None
    assert r.startup_s is not None
    assert abs(r.startup_s - deployment.serve_run_s) <= 0.1 * deployment.serve_run_s


def test_the_replica_never_looked_abandoned_while_it_started(deployment):
    """Heartbeats went on while the engine started and blocked the replica's event loop: no
    two consecutive events of the initialization are as far apart as the abandonment bound
    (three intervals of the default 5 s)."""
    events = deployment.events()
    end = next(i for i, e in enumerate(events) if isinstance(e, InitializationCompleted))
    times = [e.timestamp for e in events[:end + 1]]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert max(gaps) < 3 * 5.0
    beats = [e for e in events[:end] if isinstance(e, HeartbeatRecorded)]
    assert beats, "no heartbeat in a start-up of several seconds"


def test_the_replicas_placement_group_comes_first_and_is_used(deployment):
    """The replica's placement group is on the context before any hook runs (so a download
    would reach each of its nodes), and the placement step reports it as the replica's."""
    events = deployment.events()
    (first,) = [e for e in events if isinstance(e, ContextChanged)
                and e.field == "placement_group"]
    assert first.changed_by == "llm_init.serve.configs.ReplicaPlacementGroup"
    assert first.hook == "on_pre_initialization"
    (placed,) = [e.details["placement_group"] for e in events
                 if isinstance(e, StepProgressed) and "placement_group" in e.details]
    assert placed["id"] == first.new["id"]
    assert placed["source"] == "current"
    assert placed["bundles"] == [{"CPU": 2.0}]  # the replica's CPU merged into bundle 0
    assert placed["bundles_to_node"]["0"]["node_id"] == ray.get_runtime_context().get_node_id()


def test_event_log_replays_to_the_live_context(deployment):
    """Replaying the log gives the context the replica held at on_post_initialization."""
    lines = [json.loads(line) for line in deployment.hooks_log.read_text().splitlines()]
    (live,) = [line for line in lines if "live_snapshot" in line]
    r = replay(deployment.events())
    assert r.init_id == live["init_id"]
    assert r.state == live["live_snapshot"]
    assert r.state["custom_data"]["engine_type"] == "LLMInitVLLMEngine"
    assert r.state["extra_init_kwargs"] == {"max_num_seqs": 2}


def test_prefetched_directory_skips_the_download_and_feeds_the_engine(deployment):
    """on_pre_download returned False after pointing the context at a pre-fetched copy: no
    download step ran, and the engine loaded the model from that copy."""
    events = deployment.events()
    assert not deployment.marker.exists()
    assert not [e for e in events if isinstance(e, StepStarted) and e.step == "download"]
    (skip,) = [e for e in events if isinstance(e, PhaseSkipped)]
    assert (skip.phase, skip.skipped_by, skip.hook) == (
        "download", "tests.e2e.support.PrefetchedModel", "on_pre_download")
    engine = [e.details for e in events if isinstance(e, StepProgressed) and "model" in e.details]
    assert engine == [{"engine_kwargs": {**engine[0]["engine_kwargs"], "max_num_seqs": 2},
                       "model": str(deployment.prefetched)}]


def test_ray_callback_hooks_run_once_each_at_their_points(deployment):
    """The ray.serve.llm callback's three hooks ran once each (Ray's own start() did not call
    them again), were recorded as llm-init hooks, and their context changes took effect."""
    calls = [json.loads(line) for line in deployment.ray_log.read_text().splitlines()]
    assert [c["hook"] for c in calls] == [
        "on_before_node_init", "on_before_download_model_files_distributed",
        "on_after_node_init"]
    assert calls[2]["hf_model_id"] == str(deployment.prefetched)
    events = deployment.events()
    adapter = [(e.phase, e.hook) for e in events
               if isinstance(e, HookCompleted) and e.callback == RAY_ADAPTER]
    assert adapter == [("pre_initialization", "on_pre_initialization"),
                       ("download", "on_pre_download"), ("download", "on_post_download")]
    state = replay(events).state
    assert state["custom_data"]["ray_marker"] == "set in on_before_node_init"
    assert state["runtime_env"]["env_vars"]["FROM_RAY_CALLBACK"] == "1"


def test_engine_subphases_are_events(deployment):
    """vLLM's start-up sub-phases, logged in its EngineCore process, became events."""
    subphases = {e.details["subphase"]: e.details for e in deployment.events()
                 if isinstance(e, StepProgressed) and "subphase" in e.details}
    print({name: d["duration_s"] for name, d in subphases.items()})
    assert {"engine_config", "engine_process_start", "model_init", "weight_loading",
            "init_engine", "engine_core_start", "serving_init"} <= subphases.keys()
    assert subphases["weight_loading"]["process"] != "MainProcess"
    assert all(d["duration_s"] >= 0 for d in subphases.values())


def test_the_replicas_weight_load_is_recorded_with_the_files_bytes(deployment):
    """The replica's engine worker recorded its weight load: the bytes of the safetensors files
    of the directory it loaded, in vLLM's own time."""
    (loaded,) = [e for e in deployment.events() if isinstance(e, WeightsLoaded)]
    assert loaded.bytes == sum(p.stat().st_size
                               for p in deployment.prefetched.glob("*.safetensors"))
    assert (loaded.source, loaded.load_format) == ("vllm_log", "auto")
    assert loaded.worker != "MainProcess"


def test_status_endpoint_answered_while_the_replica_started(deployment):
    """Polled during serve.run, the status endpoint showed the engine step running, then the
    completed initialization."""
    running = [s for s in deployment.statuses if s.get("outcome") == "running"]
    assert any(s["phase"] == "engine_init" and s["step"] == "engine" for s in running)
    assert all(s["elapsed_s"] >= 0 for s in running)
    final = deployment.statuses[-1]
    assert final["outcome"] == "completed"
    assert final["phases"].keys() == {"pre_initialization", "download", "placement_group",
                                      "engine_init", "post_initialization"}
    assert "weight_loading" in final["engine"]["subphases"]


def test_demo_report_prints_timeline_and_where_to_look(deployment, capsys):
    """The demo's closing report: the timeline, the sub-phases and the next commands."""
    from llm_init.demo.run import latest_init_id, print_report

    store = deployment.store.removeprefix("sqlite://")
    init_id = latest_init_id(store)
    print_report(store, init_id, metrics_port=None, http_port=deployment.cluster.http_port)
    out = capsys.readouterr().out
    assert init_id in out
    assert "SKIPPED" in out
    assert f"llm-init timeline {init_id[:12]} --store {store}" in out
    assert "weight_loading" in out
