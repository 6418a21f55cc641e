"""Warm starts, measured: cold against warm deploys, and the restore's own cost per MB.

    python benchmarks/warm_start.py [--rounds 3] [--skip-serve] [--no-ray-recipe]
                                    [--restore-mb 64] [--verify-only]

1. **Serve, cold against warm**, signed as in production (``--unsigned`` leaves keys out):
   cold deploys sign what they publish with an Ed25519 key, warm deploys verify the signature
   and every file's SHA-256 before they use a byte. One local Ray cluster, an S3-compatible
   store (moto's server on loopback), the tiny random-weight Llama with vLLM's default compilation
   (``enforce_eager=False``). Each round deploys twice, each time on a "node" whose local
   caches are empty (its own download cache, ``cache_dir`` for ``VLLM_CACHE_ROOT``, and
   ``TORCHINDUCTOR_CACHE_DIR``): cold, on an empty store prefix (it compiles, then publishes
   after the replica is ready; the benchmark waits for the publish), then warm on the same
   prefix (it restores first). Alternating, one new prefix per round. Wall time runs from the
   builder call to the first completion; the event log gives ``engine_init``, vLLM's
   sub-phases and the restore. Medians over rounds; ratios are of medians.
   **Ray's manual recipe** (a third arm, ``ray-recipe``): Ray Serve LLM's own builder
   (``ray.serve.llm.build_openai_app``, no llm-init) with the recipe of Ray's
   deployment-initialization guide, prepared by hand once before the rounds as the guide says:
   one Ray Serve LLM start compiles (``ray-prep``, reported, not in the medians), the directory
   vLLM names in its log (on the CPU build "saved AOT compiled function to
   .../torch_compile_cache/torch_aot_compile/<hash>/rank_0_0/model") is uploaded to the same S3
   server, and every ``ray-recipe`` deploy, on a node with empty local caches, has Ray's
   ``CloudDownloader`` fetch it to that path under its own ``VLLM_CACHE_ROOT`` with
   ``compilation_config.cache_dir`` pointing there. Its time includes the fetch; it has no event
   log, so only deploy-to-first-completion compares. Within a round the warm and recipe arms
   swap order every round.
2. **The restore's own cost.** An artifact of ``--restore-mb`` MB (the real cache of a cold
   start padded with incompressible files) published to and restored from a directory store
   and the S3 store: restore seconds (fetch, verify the archive's SHA-256, unpack with every
   file's SHA-256) per MB, against ``shutil.copytree`` of the same files.
3. **What verification costs** (``--verify-only`` runs just this): the same artifact, signed
   with an Ed25519 key, in a directory store: the signature check over the manifest, the
   archive's SHA-256, and the per-file SHA-256s while unpacking (unpack with them against
   without), each per MB; and a whole restore with signatures required against one without.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def signing_settings(workdir: pathlib.Path) -> dict[str, Any]:
    """A publisher's key and the readers' trust in it, as production runs warm starts: every
    cold deploy signs what it publishes and every warm deploy verifies before unpacking."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = workdir / "publisher.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return {"signing_key": str(private), "trusted_keys": [public.decode()]}


def serve_rounds(rounds: int, workdir: pathlib.Path, *, ray_recipe: bool = True,
                 signed: bool = True) -> list[dict[str, Any]]:
    from llm_init.demo.run import local_cluster
    from llm_init.demo.tiny_model import build_tiny_model
    from llm_init.demo.warm import artifact_store, deploy
    from tests.support.net import free_port

    for name in ("ray.serve", "ray.llm", "httpx"):
        logging.getLogger(name).setLevel(logging.WARNING)
    model = build_tiny_model(workdir / "tiny")
    http_port = free_port()
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    rows: list[dict[str, Any]] = []
    with artifact_store(workdir) as (store, store_env), local_cluster(
            metrics_port=None, http_port=http_port):
        recipe = None
        if ray_recipe:
            recipe = prepare_ray_recipe(workdir, model, http_port, store, {**env, **store_env})
            rows.append({"round": -1, "arm": "ray-prep", "deploy_s": recipe.prep_s})
            print(json.dumps(rows[-1]), flush=True)
        for round_no in range(rounds):
            prefixed = {**store, "url": f"{store['url']}/round-{round_no}-{uuid.uuid4().hex[:6]}",
                        **(signing_settings(workdir) if signed else {})}
            arms = ["cold", "warm"]
            if recipe is not None:
                arms.insert(1 + round_no % 2, "ray-recipe")
            for arm in arms:
                name = f"r{round_no}-{arm}"
                if arm == "ray-recipe" and recipe is not None:
                    row = {"round": round_no, "arm": arm,
                           "deploy_s": recipe.deploy(workdir / name, model, http_port)}
                else:
                    start = deploy(workdir, name, model, http_port, prefixed,
                                   {**env, **store_env}, wait_for_publish=arm == "cold")
                    row = {"round": round_no, "arm": arm, "deploy_s": start.deploy_s,
                           **facts(start.store, start.init_id)}
                row["loadavg_1m"] = os.getloadavg()[0]
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


class RayRecipe:
    """Ray's manual compile-cache recipe on Ray Serve LLM's own builder: the cache uploaded
    once, by hand; each deploy fetches it with ``CloudDownloader``."""

    CALLBACK = "ray.llm._internal.common.callbacks.cloud_downloader.CloudDownloader"

    def __init__(self, uri: str, cache_name: str, env: dict[str, str], prep_s: float) -> None:
        self.uri, self.cache_name, self.env, self.prep_s = uri, cache_name, env, prep_s

    def deploy(self, node: pathlib.Path, model: pathlib.Path, http_port: int) -> float:
        """One deploy on a node with empty local caches; serve.run to the first completion."""
        vllm_cache = node / "vllm"
        local = vllm_cache / "torch_compile_cache" / "torch_aot_compile" / self.cache_name
        return ray_deploy(node, model, http_port, {**self.env, "VLLM_CACHE_ROOT": str(vllm_cache)},
                          engine_kwargs={"compilation_config": {"cache_dir": str(local)}},
                          callback_config={"callback_class": self.CALLBACK,
                                           "callback_kwargs": {"paths": [[self.uri, str(local)]]}})


def prepare_ray_recipe(workdir: pathlib.Path, model: pathlib.Path, http_port: int,
                       store: dict[str, Any], env: dict[str, str]) -> RayRecipe:
    """The recipe's manual step: one Ray Serve LLM start that compiles, and its cache
    directory uploaded to the S3 store."""
    import boto3

    if "endpoint_url" not in store:
        raise SystemExit("the ray-recipe arm needs moto's S3 server (pip install 'moto[server]'); "
                         "or pass --no-ray-recipe")
    node = workdir / "ray-prep"
    env = {**env, "AWS_ENDPOINT_URL_S3": store["endpoint_url"]}
    prep_s = ray_deploy(node, model, http_port, {**env, "VLLM_CACHE_ROOT": str(node / "vllm")})
    (compiled,) = (node / "vllm").glob("torch_compile_cache/torch_aot_compile/*")
    bucket = store["url"].removeprefix("s3://").split("/", 1)[0]
    prefix = f"ray-recipe/{compiled.name}"
    client = boto3.client("s3", endpoint_url=store["endpoint_url"],
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                          region_name=env["AWS_DEFAULT_REGION"])
    for path in sorted(compiled.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(compiled)}")
    return RayRecipe(f"s3://{bucket}/{prefix}", compiled.name, env, prep_s)


def ray_deploy(node: pathlib.Path, model: pathlib.Path, http_port: int, env: dict[str, str],
               *, engine_kwargs: dict[str, Any] | None = None,
               callback_config: dict[str, Any] | None = None) -> float:
    """Ray Serve LLM's built-in start (no llm-init), compilation on, on a fresh "node"."""
    from ray import serve
    from ray.serve.llm import build_openai_app

    from llm_init.demo.run import APP_NAME, app_args, replica_env
    from llm_init.demo.warm import WARM_ENGINE_KWARGS, completion

    shutil.rmtree(node, ignore_errors=True)
    node.mkdir(parents=True)
    args = app_args(model, event_store="memory://")
    args.pop("llm_init")
    (config,) = args["llm_configs"]
    config["engine_kwargs"] = {**WARM_ENGINE_KWARGS, **(engine_kwargs or {})}
    config["runtime_env"] = {"env_vars": replica_env(
        {**env, "TORCHINDUCTOR_CACHE_DIR": str(node / "inductor")})}
    if callback_config is not None:
        config["callback_config"] = callback_config
    started = time.perf_counter()
    serve.run(build_openai_app(args), name=APP_NAME, route_prefix="/")
    completion(http_port)
    deploy_s = time.perf_counter() - started
    serve.delete(APP_NAME)
    return deploy_s


def facts(store_url: str, init_id: str) -> dict[str, Any]:
    from llm_init.events import (
        ArtifactMissed,
        ArtifactPublished,
        ArtifactRestored,
        PhaseCompleted,
        StepProgressed,
    )
    from llm_init.replay import read_events
    from llm_init.stores import open_store

    store = open_store(store_url, create=False)
    try:
        events = read_events(store, init_id)
    finally:
        store.close()
    out: dict[str, Any] = {}
    for e in events:
        if isinstance(e, PhaseCompleted):
            out[e.phase] = e.duration_s
        elif isinstance(e, StepProgressed) and "subphase" in e.details:
            out[f"sub.{e.details['subphase']}"] = e.details.get("duration_s")
        elif isinstance(e, ArtifactRestored):
            out.update(warm="hit", restore_s=e.seconds, restore_bytes=e.bytes,
                       signed_by=e.signed_by)
        elif isinstance(e, ArtifactMissed):
            out.update(warm=f"miss:{e.reason}")
        elif isinstance(e, ArtifactPublished):
            out.update(publish_s=e.seconds, publish_bytes=e.bytes)
    return out


def summarize(rows: list[dict[str, Any]]) -> None:
    subphases = sorted({k for r in rows for k in r if k.startswith("sub.")})
    keys = ["deploy_s", "engine_init", "download", *subphases]
    print("\n| median over rounds | cold | warm | warm / cold |\n|---|---|---|---|")
    for key in keys:
        cold = [r[key] for r in rows if r["arm"] == "cold" and isinstance(r.get(key), float | int)]
        warm = [r[key] for r in rows if r["arm"] == "warm" and isinstance(r.get(key), float | int)]
        if not cold or not warm:
            continue
        c, w = statistics.median(cold), statistics.median(warm)
        print(f"| {key} | {c:.2f} s | {w:.2f} s | {w / c:.2f} |" if c else f"| {key} | - |")
    for arm in ("cold", "warm"):
        print(f"{arm}: " + ", ".join(str(r.get("warm")) for r in rows if r["arm"] == arm))
    recipe = [r["deploy_s"] for r in rows if r["arm"] == "ray-recipe"]
    warm = [r["deploy_s"] for r in rows if r["arm"] == "warm"]
    if recipe and warm:
        w, r = statistics.median(warm), statistics.median(recipe)
        print("\n| deploy to first completion, median | llm-init warm | Ray's recipe | "
              "llm-init / Ray |\n|---|---|---|---|")
        print(f"| s | {w:.2f} | {r:.2f} | {w / r:.2f} |")
        print("per round (warm, recipe): " + ", ".join(
            f"{a:.1f}/{b:.1f}" for a, b in zip(warm, recipe, strict=False)))
    for row in rows:
        if row["arm"] == "ray-prep":
            print(f"Ray Serve LLM cold start (the recipe's preparation): {row['deploy_s']:.1f} s")
    loads = [r["loadavg_1m"] for r in rows if "loadavg_1m" in r]
    if loads:
        print(f"1-minute load average after each deploy: {min(loads):.1f}-{max(loads):.1f}")


def restore_cost(megabytes: int, workdir: pathlib.Path) -> None:
    from llm_init.artifacts import open_artifact_store, publish, restore
    from tests.support.s3 import running_moto_s3

    source = incompressible_cache(megabytes, workdir / "artifact-src")
    size_mb = sum(p.stat().st_size for p in source.rglob("*") if p.is_file()) / 1e6
    copies = []
    for i in range(3):
        dest = workdir / f"copy{i}"
        started = time.perf_counter()
        shutil.copytree(source, dest)
        copies.append(time.perf_counter() - started)
        shutil.rmtree(dest)
    copy_s = statistics.median(copies)
    print(f"\n| {size_mb:.0f} MB artifact | publish s | restore s | restore s/MB | "
          f"restore / plain copy |\n|---|---|---|---|---|")
    print(f"| shutil.copytree | - | {copy_s:.2f} | {copy_s / size_mb * 1000:.1f} ms | 1.00 |")
    with running_moto_s3() as s3:
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        s3.client().create_bucket(Bucket=bucket)
        (workdir / "dir-store").mkdir(exist_ok=True)  # a mounted shared directory exists
        for label, url, endpoint in (("directory", f"file://{workdir / 'dir-store'}", None),
                                     ("S3 (moto, loopback)", f"s3://{bucket}/x",
                                      s3.endpoint_url)):
            store = open_artifact_store(url, endpoint_url=endpoint)
            key = uuid.uuid4().hex[:24]
            published = publish(store, key, {}, source, max_bytes=None)
            times = []
            for i in range(3):
                dest = workdir / f"restored-{i}"
                outcome = restore(store, key, {}, dest)
                assert outcome.result == "hit", outcome
                times.append(outcome.seconds)
                shutil.rmtree(dest)
            r = statistics.median(times)
            print(f"| {label} | {published.seconds:.2f} | {r:.2f} | "
                  f"{r / size_mb * 1000:.1f} ms | {r / copy_s:.2f} |")


def incompressible_cache(megabytes: int, root: pathlib.Path) -> pathlib.Path:
    for i in range(max(1, megabytes // 8)):
        path = root / "torch_compile_cache" / f"part{i:03d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(8 << 20))
    return root


def verify_cost(megabytes: int, workdir: pathlib.Path, repeats: int = 9) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from llm_init.artifacts import Manifest, open_artifact_store, publish, restore
    from llm_init.artifacts.manifest import unpack, verify_archive
    from llm_init.artifacts.signing import Signer, TrustedKeys, key_id, signature_name
    from llm_init.artifacts.transfer import manifest_name

    source = incompressible_cache(megabytes, workdir / "verify-src")
    size_mb = sum(p.stat().st_size for p in source.rglob("*") if p.is_file()) / 1e6
    private = Ed25519PrivateKey.generate()
    signer = Signer(private, key_id(private.public_key()))
    trust = TrustedKeys({signer.key_id: private.public_key()})
    root = workdir / "verify-store"
    root.mkdir(exist_ok=True)
    store = open_artifact_store(f"file://{root}")
    key = uuid.uuid4().hex[:24]
    assert publish(store, key, {}, source, max_bytes=None, signer=signer).result == "published"
    raw = store.read(manifest_name(key)) or b""
    signature = store.read(signature_name(key, raw))
    manifest = Manifest.from_json(raw)
    archive = root / key / manifest.archive

    def best_s(works: dict[str, Any], n: int = repeats) -> dict[str, float]:
        """The fastest of ``n`` runs of each, taken in turns so that a busy machine slows
        each alike; the fastest run is the one least disturbed by other work."""
        times: dict[str, list[float]] = {name: [] for name in works}
        for _ in range(n):
            for name, work in works.items():
                started = time.perf_counter()
                work()
                times[name].append(time.perf_counter() - started)
        return {name: min(found) for name, found in times.items()}

    def unpacked(digests: bool) -> Any:
        def work() -> None:
            dest = workdir / "verify-unpack"
            shutil.rmtree(dest, ignore_errors=True)
            dest.mkdir()
            unpack(archive, manifest, dest, file_digests=digests)
        return work

    signature_s = best_s({"": lambda: trust.verify(raw, signature)}, 200)[""]
    found = best_s({"archive": lambda: verify_archive(archive, manifest),
                    "plain": unpacked(False), "digests": unpacked(True)})
    archive_s, plain_s, digests_s = found["archive"], found["plain"], found["digests"]

    def restored(check: TrustedKeys | None) -> Any:
        def work() -> None:
            dest = workdir / "verify-restore"
            shutil.rmtree(dest, ignore_errors=True)
            assert restore(store, key, {}, dest, trust=check).result == "hit"
        return work

    found = best_s({"unsigned": restored(None), "signed": restored(trust)})
    unsigned_s, signed_s = found["unsigned"], found["signed"]
    per_mb = 1000 / size_mb
    print(f"\n| {size_mb:.0f} MB artifact, {len(manifest.files)} files, manifest "
          f"{len(raw)} B, best of {repeats} | s | ms per MB |\n|---|---|---|")
    print(f"| signature check (Ed25519 over the manifest; per artifact) | {signature_s:.6f} | "
          f"{signature_s * per_mb:.4f} |")
    print(f"| archive SHA-256 | {archive_s:.3f} | {archive_s * per_mb:.2f} |")
    print(f"| per-file SHA-256s while unpacking (unpack with - without) | "
          f"{digests_s - plain_s:.3f} | {(digests_s - plain_s) * per_mb:.2f} |")
    print(f"| unpack without / with per-file SHA-256s | {plain_s:.3f} / {digests_s:.3f} | "
          f"{plain_s * per_mb:.2f} / {digests_s * per_mb:.2f} |")
    print(f"| restore, no trusted keys / signatures required | {unsigned_s:.3f} / "
          f"{signed_s:.3f} | {unsigned_s * per_mb:.2f} / {signed_s * per_mb:.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--no-ray-recipe", action="store_true",
                        help="leave out the arm with Ray's manual recipe")
    parser.add_argument("--restore-mb", type=int, default=64)
    parser.add_argument("--verify-only", action="store_true",
                        help="measure only what verification costs per MB")
    parser.add_argument("--unsigned", action="store_true",
                        help="deploy without signing keys (signed and verified by default)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="llm-init-warm-bench-") as tmp:
        workdir = pathlib.Path(tmp)
        if not args.verify_only:
            if not args.skip_serve:
                summarize(serve_rounds(args.rounds, workdir,
                                       ray_recipe=not args.no_ray_recipe,
                                       signed=not args.unsigned))
            restore_cost(args.restore_mb, workdir)
        verify_cost(args.restore_mb, workdir)
    return 0


if __name__ == "__main__":
    from llm_init.ray_exit import exit_process

    # A process that started Ray ends past Ray's metric exporter (llm_init.ray_exit).
    exit_process(main())
