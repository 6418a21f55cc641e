"""Store URLs are checked when configured, and their credentials never show, whatever they hold."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import pytest

from llm_init import LLMConfig
from llm_init.artifacts import open_artifact_store
from llm_init.artifacts.settings import ArtifactSettings
from llm_init.artifacts.stores import ArtifactStoreError, S3ArtifactStore
from llm_init.errors import CallbackConfigError
from llm_init.events import ArtifactMissed, ArtifactPublished
from llm_init.steps.warm_start import CONTEXT_KEY
from tests.support.s3 import running_moto_s3
from tests.support.warm import CachingEngineStep, of_type, start

KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SECRET = "wJalr/XUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # AWS secret keys hold ``/`` and ``+``
NOBODY = 65534
FRAGMENTS = (KEY_ID, "wJalr", "XUtnFEMI", "K7MDENG", "bPxRfiCYEXAMPLEKEY")


@pytest.mark.parametrize(("url", "error"), [
    ("s3://", "names no bucket"),
    ("s3:///prefix", "names no bucket"),
    ("file://", "needs an absolute path"),
    ("file://localhost", "needs an absolute path"),
    ("file:relative/dir", "unsupported scheme"),
    ("file://server/share", "needs an absolute path"),
    ("file:///", "names no directory"),
])
def test_a_store_url_without_a_place_is_a_one_line_configuration_error(
        url: str, error: str) -> None:
    """A store URL that names no bucket or no absolute directory fails at configuration time
    with one line naming the URL."""
    with pytest.raises(CallbackConfigError, match=error) as raised:
        LLMConfig(model_id="tiny", artifact_store=url)
    assert repr(url) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_directory_store_that_does_not_exist_is_refused_naming_it(tmp_path: Path) -> None:
    """``file:///missing/dir`` is an error naming the directory and what to do, not a new
    empty store."""
    missing = tmp_path / "nfs" / "warm"
    with pytest.raises(ArtifactStoreError, match=f"{missing} does not exist; mount it or "
                                                 "create it"):
        open_artifact_store(f"file://{missing}")
    assert not missing.exists()


def test_publishing_to_an_unmounted_directory_creates_nothing_there(tmp_path: Path) -> None:
    """A start whose shared store directory is missing (an unmounted NFS path) neither creates
    it nor publishes into it: the skip names the directory."""
    missing = tmp_path / "nfs" / "warm"
    _, events = start(tmp_path, "node-a", str(missing), CachingEngineStep())
    assert not (tmp_path / "nfs").exists()
    assert "does not exist; mount it or create it" in of_type(events, ArtifactMissed)[0].message
    assert of_type(events, ArtifactPublished) == []


def test_credentials_holding_slashes_are_masked_whole_in_the_location() -> None:
    """The location shown for ``s3://KEY:SECRET@bucket/p`` masks all of the user info, however
    many ``/`` and ``+`` the secret holds, and keeps the bucket and prefix."""
    settings = ArtifactSettings(url=f"s3://{KEY_ID}:{SECRET}@bucket/team/warm")
    assert settings.location == "s3://***@bucket/team/warm"


def test_the_bucket_is_what_follows_the_credentials() -> None:
    """The bucket of ``s3://KEY:SECRET@bucket/p`` is ``bucket``, not a piece of the secret."""
    store = open_artifact_store(f"s3://{KEY_ID}:{SECRET}@bucket/team/warm")
    assert isinstance(store, S3ArtifactStore)
    assert (store.bucket, store.prefix, store.location) == ("bucket", "team/warm/",
                                                            "s3://bucket/team/warm")


def test_a_secret_with_slashes_in_the_store_url_reaches_no_event_or_log_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A cold start and a warm start through ``s3://KEY:SECRET@bucket/p`` against a real S3
    server: the artifact is published to and restored from ``bucket``, and no fragment of the
    key id or the secret is in any event or log line."""
    bucket = f"warm-{uuid.uuid4().hex[:8]}"
    engine = CachingEngineStep()
    with running_moto_s3() as s3, caplog.at_level(logging.INFO):
        s3.client().create_bucket(Bucket=bucket)
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3.endpoint_url)
        url = f"s3://{KEY_ID}:{SECRET}@{bucket}/warm"
        _, cold = start(tmp_path, "node-a", url, engine)
        _, warm = start(tmp_path, "node-b", url, engine)
        keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert of_type(cold, ArtifactPublished)[0].store == f"s3://***@{bucket}/warm"
    assert [e.TYPE for e in warm if e.TYPE.startswith("ArtifactRe")] == ["ArtifactRestored"]
    assert any(k.startswith("warm/") and k.endswith(".tar") for k in keys)
    text = repr(cold) + repr(warm) + caplog.text
    assert [f for f in FRAGMENTS if f in text] == []


def test_the_default_model_link_dir_is_the_users_own() -> None:
    """By default the model link lives under this user's home, not in a directory any local
    user could create first."""
    link_dir = ArtifactSettings(url="s3://bucket/warm").model_link_dir
    assert link_dir is not None
    assert Path(link_dir).expanduser().is_relative_to(Path.home())


def linked_model_path(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> str:
    """The model path the engine was given by a start whose model links go to
    ``tmp_path/links``."""
    with caplog.at_level(logging.WARNING, logger="llm_init.steps.warm_start"):
        ctx, _ = start(tmp_path, "node-a", str(tmp_path / "store"), CachingEngineStep(),
                       publish=False)
    return str(ctx.custom_data[CONTEXT_KEY]["model_path"])


def test_an_own_model_link_dir_is_used(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                       ) -> None:
    """A link directory this user owns and only it can write to holds the engine's model
    link."""
    (tmp_path / "links").mkdir(mode=0o755)
    assert Path(linked_model_path(tmp_path, caplog)).parent == tmp_path / "links"


def test_a_model_link_dir_anyone_can_write_to_is_not_used(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A world-writable link directory is refused with a warning naming it: the engine loads
    the download's own directory and no link is made there."""
    links = tmp_path / "links"
    links.mkdir()
    links.chmod(0o777)
    model_path = linked_model_path(tmp_path, caplog)
    assert not Path(model_path).is_relative_to(links)
    assert list(links.iterdir()) == []
    assert f"{links} is writable by others" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")
def test_a_model_link_dir_owned_by_another_user_is_not_used(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A link directory another user made first (here ``nobody``'s) is refused with a warning
    naming its owner: the engine loads the download's own directory."""
    links = tmp_path / "links"
    links.mkdir(mode=0o755)
    os.chown(links, NOBODY, NOBODY)
    model_path = linked_model_path(tmp_path, caplog)
    assert not Path(model_path).is_relative_to(links)
    assert list(links.iterdir()) == []
    assert f"{links} is owned by uid {NOBODY}" in caplog.text


def test_a_directory_store_whose_root_vanished_is_not_recreated_by_a_write(
        tmp_path: Path) -> None:
    """A directory store whose root is gone (unmounted after it was opened) refuses writes,
    naming the root, and creates nothing; folders inside an existing root are made as needed."""
    root = tmp_path / "share"
    root.mkdir()
    store = open_artifact_store(str(root))
    assert store.put_new("key/MANIFEST.json", b"{}")
    root.joinpath("key", "MANIFEST.json").unlink()
    root.joinpath("key").rmdir()
    root.rmdir()
    source = tmp_path / "archive.tar"
    source.write_bytes(b"tar")
    for write in (lambda: store.put_new("key/MANIFEST.json", b"{}"),
                  lambda: store.put("key/data.tar", source)):
        with pytest.raises(ArtifactStoreError, match=f"{root} does not exist"):
            write()
    assert not root.exists()


def test_a_bucket_named_like_a_secret_value_is_shown_as_named(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A store's location is an identifier: a bucket whose name equals some credential's value
    is shown as named, not as ``***``."""
    monkeypatch.setenv("MYSVC_API_KEY", "zq8vr2mk9xlp4tnw7ybc")
    store = open_artifact_store("s3://zq8vr2mk9xlp4tnw7ybc/warm")
    assert store.location == "s3://zq8vr2mk9xlp4tnw7ybc/warm"
