"""Warm starts end to end: real Ray Serve, vLLM's CPU build with compilation on
(``enforce_eager=False``), an S3-compatible store (moto's server) whose URL carries a secret,
artifacts signed with an Ed25519 key that every replica trusts (and publishes with), spans
over OTLP/HTTP to a real receiver, and six deployments, each on a "node" of its own (its
own download cache and local compile cache):

1. cold: nothing in the store, vLLM compiles; the cache is published after the replica is ready;
2. warm: the model lies at another path, the artifact is restored, compilation is shorter;
3. corrupt: the published archive is damaged; a miss with its reason, the start succeeds, and
   the damaged artifact is replaced by this start's publish;
4. unreachable: no store at the endpoint; a miss within the restore's time limit;
5. upgraded: the store holds this model's artifact from another vLLM version; two replicas at
   once miss with version_mismatch naming it, compile, and publish the same key at once;
6. Ray's manual recipe, llm-init's warm start off: the cold start's compile cache uploaded by
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from llm_init import read_events
from llm_init.artifacts import Manifest, open_artifact_store, publish, restore
from llm_init.artifacts.key import make_key
from llm_init.artifacts.settings import ArtifactSettings
from llm_init.artifacts.signing import key_id, signature_name
from llm_init.artifacts.transfer import manifest_name
from llm_init.cli import app as cli_app
from llm_init.events import (
    ArtifactMissed,
    ArtifactPublished,
    ArtifactPublishSkipped,
    ArtifactRestored,
    ArtifactUseObserved,
    Event,
    HookCompleted,
    PhaseCompleted,
    StepProgressed,
)
from llm_init.stores import open_store
from tests.e2e.conftest import Cluster
from tests.e2e.support import replica_pythonpath
from tests.support.otlp_receiver import OTLPReceiver, ReceivedSpan
from tests.support.s3 import ENV, MotoS3

# Six compile-on starts and one warm one take 10-30 minutes on a 2-core machine.
pytestmark = [pytest.mark.e2e, pytest.mark.ray, pytest.mark.vllm, pytest.mark.timeout(3000)]

APP = "warm"
UNREACHABLE_TIMEOUT_S = 20.0
CLOUD_DOWNLOADER = "ray.llm._internal.common.callbacks.cloud_downloader.CloudDownloader"
# Credentials written into the store's URL: llm-init masks them wherever it shows the URL.
SECRET = "e2eWarmS3cretValue"
OLDER_VLLM = "0.9.0"


@dataclass
class Start:
    name: str
    inits: dict[str, list[Event]]  # per initialization (one per replica), in start order
    deploy_s: float  # serve.run until the first completion answered
    store_url: str = ""

    @property
    def events(self) -> list[Event]:
        return next(iter(self.inits.values()))

    def phase_s(self, phase: str) -> float:
        return next(e.duration_s for e in self.events
                    if isinstance(e, PhaseCompleted) and e.phase == phase)

    def subphase_s(self, name: str) -> float | None:
        found = [e.details.get("duration_s") for e in self.events
                 if isinstance(e, StepProgressed) and e.details.get("subphase") == name]
        return float(found[-1]) if found and isinstance(found[-1], int | float) else None

    def of_type(self, kind: type[Event]) -> list[Any]:
        return [e for events in self.inits.values() for e in events if isinstance(e, kind)]


@dataclass
class Starts:
    by_name: dict[str, Start] = field(default_factory=dict)
    recipe_files: list[str] = field(default_factory=list)  # what Ray's recipe put in place
    older: Any = None  # the key of the older vLLM's artifact put in the upgraded's store
    upgrade_objects: list[str] = field(default_factory=list)  # under the upgraded's key after
    upgrade_archive: str = ""  # the archive its manifest names
    upgrade_signature: str = ""  # the name of its manifest's signature
    upgrade_restore: str = ""  # a restore of it afterwards: hit or miss
    spans: list[ReceivedSpan] = field(default_factory=list)
    replica_logs: str = ""  # every Ray and Serve log line of the session
    metrics: str = ""  # the metrics endpoint's text at the end
    signing: dict[str, Any] = field(default_factory=dict)  # the signing settings every start has
    key_id: str = ""  # the signing key's id
    private_key: str = ""  # the base64 body of the signing key's PEM, to look for in records


def _completion(base_url: str) -> None:
    body = b'{"model": "tiny", "prompt": "hello", "max_tokens": 4}'
    request = urllib.request.Request(f"{base_url}/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 200


def _events(store_url: str, replicas: int, wait_for_publish: bool) -> dict[str, list[Event]]:
    """Each initialization's events, once there are ``replicas`` of them (and, if asked, each
    has published or skipped)."""
    deadline = time.monotonic() + (240 if wait_for_publish else 60)
    while True:
        store = open_store(store_url, create=False)
        try:
            found = {i: list(read_events(store, i)) for i in store.list_init_ids()}
        finally:
            store.close()
        done = len(found) >= replicas and (not wait_for_publish or all(
            any(isinstance(e, ArtifactPublished | ArtifactPublishSkipped) for e in events)
            for events in found.values()))
        if done or time.monotonic() > deadline:
            return dict(sorted(found.items(), key=lambda item: item[1][0].timestamp))
        time.sleep(2)


def _deploy(cluster: Cluster, model: pathlib.Path, workdir: pathlib.Path, name: str,
            artifact_store: dict[str, Any] | None, *, wait_for_publish: bool,
            engine_kwargs: dict[str, Any] | None = None, llm_config: dict[str, Any] | None = None,
            env: dict[str, str] | None = None, replicas: int = 1) -> Start:
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
                    "deployment_config": {"num_replicas": replicas},
                    **(llm_config or {})},
        env={"PYTHONPATH": replica_pythonpath(), **ENV,
             # inductor's own default cache (C++ headers) counts as local to the node
             "TORCHINDUCTOR_CACHE_DIR": str(node / "inductor"), **(env or {})})
    started = time.perf_counter()
    serve.run(build_openai_app(args), name=APP, route_prefix="/")
    _completion(cluster.base_url)
    deploy_s = time.perf_counter() - started
    inits = _events(store_url, replicas, wait_for_publish)
    serve.delete(APP)
    return Start(name, inits, deploy_s, store_url)


def _seed_older_vllms_artifact(starts: Starts, workdir: pathlib.Path, url: str,
                               endpoint_url: str) -> None:
    """Publish the cold start's cache as this model's artifact made by another vLLM version,
    into the store the upgraded starts use: what the store holds after a vLLM upgrade."""
    (missed,) = starts.by_name["cold"].of_type(ArtifactMissed)
    starts.older = make_key({**missed.parts, "vllm": OLDER_VLLM})
    store = open_artifact_store(url, endpoint_url=endpoint_url)
    settings = ArtifactSettings(url=url, **starts.signing)
    outcome = publish(store, starts.older.digest, starts.older.parts,
                      workdir / "cold" / "warm" / missed.key, signer=settings.signer())
    assert outcome.result == "published", outcome


def _read_back_upgraded_artifact(starts: Starts, workdir: pathlib.Path, url: str,
                                 endpoint_url: str) -> None:
    """What the upgraded replicas' publishes left in the store, and whether it restores."""
    (missed, *_) = starts.by_name["upgraded"].of_type(ArtifactMissed)
    store = open_artifact_store(url, endpoint_url=endpoint_url)
    starts.upgrade_objects = store.list(f"{missed.key}/")
    raw = store.read(manifest_name(missed.key))
    starts.upgrade_archive = Manifest.from_json(raw).archive if raw else ""
    starts.upgrade_signature = signature_name(missed.key, raw or b"")
    trust = ArtifactSettings(url=url, **starts.signing).trust()
    starts.upgrade_restore = restore(store, missed.key, missed.parts, workdir / "read-back",
                                     trust=trust).result


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
def receiver() -> Iterator[OTLPReceiver]:
    found = OTLPReceiver().start()
    try:
        yield found
    finally:
        found.close()


@pytest.fixture(scope="module")
def starts(cluster: Cluster, tiny_model: pathlib.Path, receiver: OTLPReceiver,
           tmp_path_factory: pytest.TempPathFactory) -> Starts:
    import ray

    workdir = tmp_path_factory.mktemp("warm")
    bucket = f"warm-{uuid.uuid4().hex[:8]}"
    found = Starts()
    traced = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.traces_endpoint,
              "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
              "OTEL_BSP_SCHEDULE_DELAY": "200"}
    signing_key = Ed25519PrivateKey.generate()
    private = workdir / "signing.pem"
    pem = signing_key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
    private.write_text(pem)
    public = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    found.signing = {"signing_key": str(private), "trusted_keys": [public]}
    found.private_key = "".join(pem.splitlines()[1:-1])
    found.key_id = key_id(signing_key.public_key())
    with MotoS3() as s3, pytest.MonkeyPatch.context() as patch:
        for name, value in ENV.items():
            patch.setenv(name, value)
        s3.client().create_bucket(Bucket=bucket)
        url = f"s3://AKIAE2EWARMSTART:{SECRET}@{bucket}"
        store = {"url": f"{url}/artifacts", "endpoint_url": s3.endpoint_url, **found.signing}
        found.by_name["cold"] = _deploy(cluster, tiny_model, workdir, "cold", store,
                                        wait_for_publish=True, env=traced)
        found.by_name["warm"] = _deploy(cluster, tiny_model, workdir, "warm", store,
                                        wait_for_publish=False, env=traced)
        client = s3.client()
        for obj in client.list_objects_v2(Bucket=bucket)["Contents"]:
            if obj["Key"].endswith(".tar"):
                data = bytearray(client.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
                data[len(data) // 2] ^= 0xFF
                client.put_object(Bucket=bucket, Key=obj["Key"], Body=bytes(data))
        found.by_name["corrupt"] = _deploy(cluster, tiny_model, workdir, "corrupt", store,
                                           wait_for_publish=True, env=traced)
        dead = {"url": f"{url}/artifacts", "endpoint_url": "http://127.0.0.1:9",
                "timeout_s": UNREACHABLE_TIMEOUT_S, **found.signing}
        found.by_name["unreachable"] = _deploy(cluster, tiny_model, workdir, "unreachable",
                                               dead, wait_for_publish=False, env=traced)
        upgrade = {"url": f"{url}/upgrade", "endpoint_url": s3.endpoint_url, **found.signing}
        _seed_older_vllms_artifact(found, workdir, upgrade["url"], s3.endpoint_url)
        found.by_name["upgraded"] = _deploy(cluster, tiny_model, workdir, "upgraded", upgrade,
                                            wait_for_publish=True, env=traced, replicas=2)
        _read_back_upgraded_artifact(found, workdir, upgrade["url"], s3.endpoint_url)
        # last: it turns the model link the others share into a plain directory
        found.by_name["ray-recipe"] = _rays_recipe(cluster, workdir, s3, bucket)
        found.recipe_files = sorted(
            p.name for p in (workdir / "ray-recipe" / "vllm").rglob("*.so"))
        found.spans = receiver.wait_for_spans(
            lambda spans: sum(s.name == "llm_init.initialize" for s in spans) >= 6,
            timeout=120)
        node = ray._private.worker._global_node
        assert node is not None
        logs = pathlib.Path(node.get_session_dir_path()) / "logs"
        found.replica_logs = "\n".join(
            f.read_text(errors="replace") for f in sorted(logs.rglob("*"))
            if f.is_file() and f.suffix in (".log", ".out", ".err"))
        with urllib.request.urlopen(f"http://127.0.0.1:{cluster.metrics_port}/metrics",
                                    timeout=30) as response:
            found.metrics = response.read().decode()
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


def test_each_start_records_what_vllm_did_with_its_cache(starts: Starts) -> None:
    """Through Serve, the cold start records that vLLM compiled (nothing restored, unused) and
    the warm start that vLLM used the restored artifact: on the CPU build its AOT artifact is
    found but fails to load (``finalize_loading``), and the recompile takes inductor's restored
    cache."""
    (cold,) = starts.by_name["cold"].of_type(ArtifactUseObserved)
    (warm,) = starts.by_name["warm"].of_type(ArtifactUseObserved)
    assert (cold.restored, cold.used, cold.aot, cold.compiled) == (False, False, "absent", True)
    assert (warm.restored, warm.used, warm.aot) == (True, True, "failed")
    assert "finalize_loading" in (warm.aot_reason or "")
    assert warm.key == starts.by_name["warm"].of_type(ArtifactRestored)[0].key


def test_the_warm_start_takes_only_what_the_trusted_key_signed(starts: Starts) -> None:
    """Every replica trusts the platform key and publishes with it: the cold start's
    published artifact and the warm start's restored one name that key."""
    (published,) = starts.by_name["cold"].of_type(ArtifactPublished)
    (restored,) = starts.by_name["warm"].of_type(ArtifactRestored)
    assert published.signed_by == restored.signed_by == starts.key_id


def test_a_corrupt_artifact_is_a_miss_and_the_start_succeeds(starts: Starts) -> None:
    """A damaged archive: a miss with reason corrupt; the engine compiles and serves."""
    (missed,) = starts.by_name["corrupt"].of_type(ArtifactMissed)
    assert missed.reason == "corrupt"
    assert not starts.by_name["corrupt"].of_type(ArtifactRestored)


def test_a_corrupt_artifact_is_replaced_by_the_start_that_found_it(starts: Starts) -> None:
    """The start that found the damaged artifact set it aside and published its own cache
    under the same key, so the next start is warm again."""
    corrupt = starts.by_name["corrupt"]
    (missed,) = corrupt.of_type(ArtifactMissed)
    (published,) = corrupt.of_type(ArtifactPublished)
    assert "set aside" in missed.message
    assert published.key == missed.key


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


def test_after_a_vllm_upgrade_each_replica_misses_naming_the_older_artifact(
        starts: Starts) -> None:
    """The store holds this model's artifact from an older vLLM: both replicas of the
    upgraded deployment miss with version_mismatch, naming that artifact and the version it
    was made with, compile, and serve."""
    upgraded = starts.by_name["upgraded"]
    assert len(upgraded.inits) == 2
    missed = upgraded.of_type(ArtifactMissed)
    assert [m.reason for m in missed] == ["version_mismatch"] * 2
    assert {m.nearest for m in missed} == {starts.older.digest}
    assert {tuple(m.differs["vllm"]) for m in missed} == {
        (OLDER_VLLM, missed[0].parts["vllm"])}
    timeline = CliRunner().invoke(
        cli_app, ["timeline", next(iter(upgraded.inits)), "--store", upgraded.store_url],
        env={"COLUMNS": "200"}).output
    assert "MISS (version_mismatch)" in timeline
    assert f"vllm {OLDER_VLLM} -> " in timeline


def test_two_replicas_publishing_the_same_key_at_once_leave_one_complete_artifact(
        starts: Starts) -> None:
    """Both replicas of the upgraded deployment publish the same key after they are ready:
    one publishes, the other skips it as existing, and the store holds exactly one complete
    artifact for the key, which restores."""
    upgraded = starts.by_name["upgraded"]
    (key,) = {m.key for m in upgraded.of_type(ArtifactMissed)}
    outcomes = sorted(
        "published" if isinstance(e, ArtifactPublished) else f"skipped:{e.reason}"
        for e in upgraded.of_type(ArtifactPublished) + upgraded.of_type(ArtifactPublishSkipped))
    assert outcomes == ["published", "skipped:exists"]
    assert starts.upgrade_objects == sorted(
        [manifest_name(key), f"{key}/{starts.upgrade_archive}", starts.upgrade_signature])
    assert starts.upgrade_restore == "hit"


def test_the_secret_in_the_store_url_reaches_no_event_span_log_line_or_metric(
        starts: Starts) -> None:
    """The store URL's credentials appear in no event log, no span exported over OTLP, no
    line of the replicas' logs, no metric and no CLI output; the masked URL does."""
    for start in starts.by_name.values():
        path = pathlib.Path(start.store_url.removeprefix("sqlite:///"))
        assert SECRET.encode() not in path.read_bytes(), start.name
        for init_id in start.inits:
            shown = CliRunner().invoke(cli_app, ["timeline", init_id, "--store",
                                                 start.store_url]).output
            assert SECRET not in shown, start.name
    assert any(m.store.endswith("/artifacts") for m in
               starts.by_name["cold"].of_type(ArtifactMissed))
    restores = [s for s in starts.spans if s.name == "llm_init.artifact.restore"]
    assert len(restores) >= 6
    assert SECRET not in repr(starts.spans)
    assert "llm_init_artifact" in starts.metrics
    assert SECRET not in starts.metrics
    assert [line for line in starts.replica_logs.splitlines() if SECRET in line] == []


def test_the_signing_key_reaches_no_event_span_or_log_line(starts: Starts) -> None:
    """The publishers' private key appears in no event log, no span and no log line."""
    for start in starts.by_name.values():
        path = pathlib.Path(start.store_url.removeprefix("sqlite:///"))
        assert starts.private_key.encode() not in path.read_bytes(), start.name
    assert starts.private_key not in repr(starts.spans)
    assert starts.private_key not in starts.replica_logs
