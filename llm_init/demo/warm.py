"""``llm-init demo --warm-start``: a cold and a warm deployment of the tiny model, compared.

``llm-init demo --warm-start``: two deployments of the tiny model with vLLM's compilation on,
the first on an empty store (cold: it compiles, then publishes its cache), the second on a
"node" whose local caches are empty (warm: it restores the artifact first); both timelines and
their difference, sub-phase by sub-phase.

The store is moto's S3-compatible server on loopback when ``moto[server]`` is installed (as the
tests use), else a directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import shutil
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from llm_init.demo.run import (
    APP_NAME,
    FAST_ENGINE_KWARGS,
    MODEL_ID,
    _stepper,
    app_args,
    demo_console,
    info_lines_off,
    local_cluster,
    quiet_libraries,
    waterfall,
)

WARM_ENGINE_KWARGS = {**FAST_ENGINE_KWARGS, "enforce_eager": False}
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo",
                  "AWS_DEFAULT_REGION": "us-east-1"}
PUBLISH_WAIT_S = 300.0


@dataclass(frozen=True, slots=True)
class DemoStart:
    """One deployment: its init id, its event store, and serve.run to first completion."""

    name: str
    init_id: str
    store: str
    deploy_s: float


@contextlib.contextmanager
def artifact_store(base: pathlib.Path) -> Iterator[tuple[dict[str, Any], dict[str, str]]]:
    """The ``artifact_store`` settings and the replica's extra environment: moto's S3 server
    on loopback if installed, else a directory."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        (base / "artifact-store").mkdir(parents=True, exist_ok=True)
        yield {"url": f"file://{base / 'artifact-store'}"}, {}
        return
    import boto3

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        bucket = f"warm-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="demo",
                     aws_secret_access_key="demo", region_name="us-east-1").create_bucket(
            Bucket=bucket)
        yield {"url": f"s3://{bucket}/warm", "endpoint_url": endpoint}, dict(S3_CREDENTIALS)
    finally:
        server.stop()


def deploy(base: pathlib.Path, name: str, model_dir: pathlib.Path, http_port: int,
           store: Mapping[str, Any], env: Mapping[str, str], *,
           wait_for_publish: bool) -> DemoStart:
    """One deployment on a fresh "node": its own download cache, compile caches and event
    store; removed once it has answered (and published, if asked)."""
    from ray import serve

    from llm_init.demo.run import latest_init_id
    from llm_init.serve import build_openai_app

    store_url, args = node_app_args(base, name, model_dir, store, env)
    started = time.perf_counter()
    serve.run(build_openai_app(args), name=APP_NAME, route_prefix="/")
    completion(http_port)
    deploy_s = time.perf_counter() - started
    init_id = latest_init_id(store_url)
    if init_id is None:
        raise RuntimeError(f"the {name} deployment recorded no initialization")
    if wait_for_publish:
        wait_for_artifact(store_url, init_id, PUBLISH_WAIT_S)
    serve.delete(APP_NAME)
    return DemoStart(name, init_id, store_url, deploy_s)


def node_app_args(base: pathlib.Path, name: str, model_dir: pathlib.Path,
                  store: Mapping[str, Any], env: Mapping[str, str]
                  ) -> tuple[str, dict[str, Any]]:
    """The event store and application args of a deployment on a fresh "node" ``base/name``
    (emptied here): its own download cache, compile caches and event store; the model link
    directory is shared by all nodes, as it is one path on every node of a cluster."""
    node = base / name
    shutil.rmtree(node, ignore_errors=True)
    node.mkdir(parents=True)
    store_url = f"sqlite:///{node / 'events.sqlite'}"
    args = app_args(
        model_dir, event_store=store_url,
        settings={"download_options": {"cache_dir": str(node / "models")},
                  "artifact_store": {**store, "cache_dir": str(node / "warm"),
                                     "model_link_dir": str(base / "links")}},
        llm_config={"engine_kwargs": dict(WARM_ENGINE_KWARGS)},
        env={**env, "TORCHINDUCTOR_CACHE_DIR": str(node / "inductor")})
    return store_url, args


@dataclass(frozen=True, slots=True)
class DemoBuild:
    """``llm-init warm build`` on a fresh "node": its JSON outcome, event store and wall time."""

    outcome: dict[str, Any]
    store: str
    build_s: float
    returncode: int
    output: str


def build_on_node(base: pathlib.Path, name: str, model_dir: pathlib.Path,
                  store: Mapping[str, Any], env: Mapping[str, str]) -> DemoBuild:
    """``llm-init warm build`` of the deployment ``deploy`` would make, through the real CLI
    in a process of its own, on a fresh node ``base/name``."""
    import json
    import subprocess
    import sys

    store_url, args = node_app_args(base, name, model_dir, store, env)
    config = base / name / "serve-config.yaml"
    serve_config = {"applications": [{"name": APP_NAME, "route_prefix": "/",
                                      "import_path": "llm_init.serve:build_openai_app",
                                      "args": args}]}
    config.write_text(json.dumps(serve_config, indent=1), encoding="utf-8")  # JSON is YAML
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "llm_init", "warm", "build", str(config),
                           "--json"], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=900, check=False)
    build_s = time.perf_counter() - started
    # vLLM logs to stdout too: the outcome is the JSON list the CLI prints last.
    start = done.stdout.rfind("\n[\n")
    try:
        (outcome,) = json.loads(done.stdout[start + 1:] if start >= 0 else done.stdout)
    except ValueError:
        outcome = {}
    return DemoBuild(outcome, store_url, build_s, done.returncode,
                     done.stdout[-4000:] + done.stderr[-4000:])


def completion(http_port: int) -> None:
    body = f'{{"model": "{MODEL_ID}", "prompt": "hello", "max_tokens": 4}}'.encode()
    request = urllib.request.Request(f"http://127.0.0.1:{http_port}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as response:
        response.read()


def wait_for_artifact(store_url: str, init_id: str, wait_s: float) -> str | None:
    """Wait until the log records the publish's outcome; its event type, or None."""
    from llm_init.events import ArtifactPublished, ArtifactPublishSkipped
    from llm_init.replay import read_events
    from llm_init.stores import open_store

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        store = open_store(store_url, create=False)
        try:
            for event in read_events(store, init_id):
                if isinstance(event, ArtifactPublished | ArtifactPublishSkipped):
                    return event.TYPE
        finally:
            store.close()
        time.sleep(1.0)
    return None


def run_warm_demo(*, workdir: str | None = None, http_port: int = 8000,
                  metrics_port: int = 8080) -> int:
    """The warm-start demo; returns the exit code."""
    with info_lines_off():
        return _run_warm_demo(workdir=workdir, http_port=http_port, metrics_port=metrics_port)


def _run_warm_demo(*, workdir: str | None, http_port: int, metrics_port: int) -> int:
    from llm_init.cli.views import diff_view
    from llm_init.demo.tiny_model import build_tiny_model
    from llm_init.fleet.diff import diff_initializations
    from llm_init.replay import read_events
    from llm_init.stores import open_store

    started = time.monotonic()
    step = _stepper(started)
    quiet_libraries()
    base = pathlib.Path(workdir or pathlib.Path.home() / ".cache" / "llm-init" / "demo-warm")
    base.mkdir(parents=True, exist_ok=True)
    model_dir = build_tiny_model(base / "tiny-llama")
    step(f"tiny model ready in {model_dir}")
    env = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
    with artifact_store(base) as (store, store_env), local_cluster(
            metrics_port=metrics_port, http_port=http_port):
        step(f"Ray is up; artifact store {store['url']}")
        cold = deploy(base, "cold", model_dir, http_port, store, {**env, **store_env},
                      wait_for_publish=True)
        step(f"cold start (compiles, then publishes): serve.run to first completion "
             f"{cold.deploy_s:.1f} s")
        warm = deploy(base, "warm", model_dir, http_port, store, {**env, **store_env},
                      wait_for_publish=False)
        step(f"warm start on a node with empty caches: serve.run to first completion "
             f"{warm.deploy_s:.1f} s ({warm.deploy_s / cold.deploy_s:.2f} of cold)")
    console = demo_console()
    for start in (cold, warm):
        print(f"\n{start.name} start:")
        console.print(waterfall(start.store, start.init_id, console.width))
    logs = []
    for start in (cold, warm):
        store_obj = open_store(start.store, create=False)
        try:
            logs.append(read_events(store_obj, start.init_id))
        finally:
            store_obj.close()
    print("\ncold (A) against warm (B):")
    console.print(diff_view(diff_initializations(logs[0], logs[1])))
    print(f"total: {time.monotonic() - started:.1f} s")
    return 0
