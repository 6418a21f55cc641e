"""Secrets never reach events, spans, logs or metrics: unit rules, then every real artefact."""

from __future__ import annotations

import io
import os
import sqlite3
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from llm_init import LLMConfig, NodeInitializationContext, SQLiteEventStore, initialize_node_sync
from llm_init.cli import app
from llm_init.errors import LLMInitError
from llm_init.summary import identifiers, json_safe
from llm_init.telemetry import names, redaction, tracing
from llm_init.telemetry.backends import PrometheusBackend
from llm_init.telemetry.logs import configure_logging
from llm_init.telemetry.metrics import MetricsCallback
from llm_init.telemetry.redaction import MASK, is_secret_key, redact_text
from tests.support.otlp_receiver import OTLPReceiver
from tests.support.steps import FailingStep, local_steps

HF_TOKEN = "hf_plantedTokenValue0123456789ABCDEFG"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYPLANTEDKEY"
PASSWORD = "pa55w0rd-planted"
URL = f"https://alice:{PASSWORD}@models.example.com/tiny"
SECRETS = (HF_TOKEN, AWS_SECRET, PASSWORD)


@pytest.mark.parametrize(("key", "secret"), [
    ("HF_TOKEN", True), ("AWS_SECRET_ACCESS_KEY", True), ("api_key", True), ("apiKey", True),
    ("Authorization", True), ("db_password", True), ("GOOGLE_APPLICATION_CREDENTIALS", True),
    ("x-amz-signature", True), ("max_num_batched_tokens", False), ("tokenizer_mode", False),
    ("model_id", False), ("keyboard", False), ("key", True), ("access_key", True),
    ("private_key", True), ("x-api-key", True), ("AWS_ACCESS_KEY_ID", True), ("passwd", True),
    ("Cookie", True), ("HFTOKEN", True), ("ctx_test_key", False), ("cache_key", False),
    ("sort_keys", False), ("PWD", False), ("OLDPWD", False), ("db_pwd", True),
])
def test_credential_like_keys_are_recognized(key: str, secret: bool) -> None:
    """Keys are split into whole segments (``_``, ``-``, ``.``, camelCase); a credential segment,
    ``key`` alone or after ``api``/``access``/``private``..., or a credential ending marks it."""
    assert is_secret_key(key) is secret


@pytest.mark.parametrize(("text", "redacted"), [
    (URL, f"https://{MASK}@models.example.com/tiny"),
    ("s3://AKIAABCDEFGHIJKLMNOP:x@bucket/key", f"s3://{MASK}@bucket/key"),
    ("https://h/m?X-Amz-Signature=abc&part=1", f"https://h/m?X-Amz-Signature={MASK}&part=1"),
    ("https://h/m?token=abc", f"https://h/m?token={MASK}"),
    (f"header Bearer {HF_TOKEN[3:]}", f"header Bearer {MASK}"),
    (f"token {HF_TOKEN} leaked", f"token {MASK} leaked"),
    ("plain text with a user@example.com address", "plain text with a user@example.com address"),
])
def test_credentials_inside_text_are_masked(text: str, redacted: str) -> None:
    """URL user info, secret query parameters, bearer headers and token shapes are masked."""
    assert redact_text(text) == redacted


def test_nested_values_under_secret_keys_are_masked_anywhere() -> None:
    """Masking follows keys through dicts and lists, and URLs in keys and values."""
    assert json_safe({"env_vars": {"HF_TOKEN": HF_TOKEN, "HOME": "/root"},
                      "sources": [{"url": URL, "auth": {"user": "u"}}], URL: 1}) == {
        "env_vars": {"HF_TOKEN": MASK, "HOME": "/root"},
        "sources": [{"url": f"https://{MASK}@models.example.com/tiny", "auth": MASK}],
        f"https://{MASK}@models.example.com/tiny": 1,
    }


class Planting:
    """A callback configured with a secret that puts secrets into the context and an error."""

    def __init__(self, aws_secret_access_key: str, mirror: str) -> None:
        self.secret = aws_secret_access_key
        self.mirror = mirror

    def on_pre_download(self, ctx: NodeInitializationContext) -> dict[str, Any]:
        ctx.extra_init_kwargs["hf_token"] = HF_TOKEN
        ctx.extra_init_kwargs["download_url"] = self.mirror
        ctx.custom_data["credentials"] = {"aws_secret_access_key": self.secret}
        ctx.custom_data["mirror"] = self.mirror
        ctx.runtime_env = {"env_vars": {"HF_TOKEN": HF_TOKEN, "AWS_SECRET_ACCESS_KEY":
                                        self.secret, "MIRROR": self.mirror}}
        return {"token": HF_TOKEN}

    def on_post_download(self, ctx: NodeInitializationContext) -> None:
        raise RuntimeError(f"mirror {self.mirror} refused {HF_TOKEN}")


@dataclass
class Sinks:
    """Where an initialization's telemetry goes: spans over OTLP/HTTP to ``receiver``, JSON
    log lines into ``logs``, metrics on a real endpoint, events into ``store_path``."""

    receiver: OTLPReceiver
    provider: Any
    logs: io.StringIO
    backend: PrometheusBackend
    store_path: Path

    def metrics_text(self) -> str:
        url = f"http://127.0.0.1:{self.backend.server_port}/metrics"
        with urllib.request.urlopen(url) as response:
            return str(response.read().decode())


@pytest.fixture
def sinks(tmp_path: Path, receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch) -> Sinks:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    provider = tracing.configure_tracing(set_global=False)
    assert provider is not None
    logs = io.StringIO()
    configure_logging("DEBUG", stream=logs, fmt="json")
    return Sinks(receiver, provider, logs,
                 PrometheusBackend(CollectorRegistry(), port=0, addr="127.0.0.1"),
                 tmp_path / "events.sqlite")


def test_planted_secrets_reach_no_artefact(sinks: Sinks) -> None:
    """Run with secrets in runtime_env, callback_kwargs, extra_init_kwargs, custom_data, the
    model id and an error message; then search the event store file, the OTLP request bodies,
    the log lines and the /metrics text for them."""
    config = LLMConfig(
        model_id=URL, model_source=URL, callback_class=Planting,
        callback_kwargs={"aws_secret_access_key": AWS_SECRET, "mirror": URL},
        runtime_env={"env_vars": {"HF_TOKEN": HF_TOKEN, "AWS_SECRET_ACCESS_KEY": AWS_SECRET}},
        engine_kwargs={"download_dir": URL}, raise_error_on_callback=False)
    store = SQLiteEventStore(sinks.store_path)
    initialize_node_sync(config, event_store=store, steps=local_steps(),
                         observers=[MetricsCallback(sinks.backend)], tracer_provider=sinks.provider)
    store.close()
    tracing.shutdown(sinks.provider)
    sinks.receiver.wait_for_spans(lambda spans: any(s.name == names.SPAN_INITIALIZE for s in spans))
    with sqlite3.connect(sinks.store_path) as db:
        rows = "\n".join(repr(row) for row in db.execute("SELECT * FROM events"))
    artefacts = {
        "event store": rows,
        "OTLP bodies": b"".join(sinks.receiver.raw_bodies).decode("latin-1"),
        "log lines": sinks.logs.getvalue(),
        "/metrics": sinks.metrics_text(),
    }
    leaks = {name: [s for s in SECRETS if s in text] for name, text in artefacts.items()}
    assert leaks == {name: [] for name in artefacts}
    # The searches looked at the right things: each artefact records the masked values.
    assert {name: "***" in text for name, text in artefacts.items()} == dict.fromkeys(
        artefacts, True)
    assert "RuntimeError: mirror https://***@models.example.com/tiny refused ***" in rows


@pytest.fixture
def user_keys(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No names added to mask or keep, before and after the test."""
    monkeypatch.delenv(redaction.ENV_REDACT_KEYS, raising=False)
    monkeypatch.delenv(redaction.ENV_KEEP_KEYS, raising=False)
    redaction.reset_keys()
    yield
    redaction.reset_keys()


def test_ray_context_keys_stay_readable(user_keys: None) -> None:
    """A key that merely ends in ``key`` (Ray's ``ctx_test_key``) is recorded as it is."""
    assert json_safe({"ctx_test_key": "ctx_test_value", "api_key": "k"}) == {
        "ctx_test_key": "ctx_test_value", "api_key": MASK}


def test_names_to_mask_and_keep_come_from_the_environment(
        user_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """``LLM_INIT_REDACT_KEYS`` adds names to mask, ``LLM_INIT_KEEP_KEYS`` names to keep."""
    monkeypatch.setenv(redaction.ENV_REDACT_KEYS, "ctx_test_key, Tenant")
    monkeypatch.setenv(redaction.ENV_KEEP_KEYS, "SESSION_TOKEN")
    assert json_safe({"ctx_test_key": "v", "tenant": "t", "session_token": "s",
                      "hf_token": "h"}) == {
        "ctx_test_key": MASK, "tenant": MASK, "session_token": "s", "hf_token": MASK}


@pytest.mark.skipif(not os.supports_bytes_environ, reason="the environment holds text here")
def test_names_to_mask_are_read_from_an_environment_value_that_is_not_utf8(
        user_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``LLM_INIT_REDACT_KEYS`` value holding undecodable bytes still adds its readable
    names."""
    monkeypatch.setitem(os.environb, os.fsencode(redaction.ENV_REDACT_KEYS),
                        b"ctx_test_key,caf\xe9_\xff")
    assert is_secret_key("ctx_test_key")


@pytest.mark.skipif(not os.supports_bytes_environ, reason="the environment holds text here")
def test_a_credential_variable_whose_value_is_not_utf8_is_masked_as_os_environ_reads_it(
        user_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A credential variable holding undecodable bytes is masked wherever its value, as
    ``os.environ`` decodes it, stands in text; a change of those bytes is seen at once."""
    monkeypatch.setitem(os.environb, b"LLM_TEST_API_TOKEN", b"Zq8vR2mK\xff9xLp4TnW7yBc")
    decoded = os.environ["LLM_TEST_API_TOKEN"]
    assert redact_text(f"sent {decoded} upstream") == f"sent {MASK} upstream"
    os.environb[b"LLM_TEST_API_TOKEN"] = b"Wk3nB8vQ\xfe2pLr6TzY5xMa"
    changed = os.environ["LLM_TEST_API_TOKEN"]
    assert redact_text(f"sent {changed} upstream") == f"sent {MASK} upstream"


def test_names_to_mask_and_keep_can_be_added_in_python(user_keys: None) -> None:
    """``redact_keys`` and ``keep_keys`` do what the environment variables do."""
    redaction.redact_keys("ctx_test_key")
    redaction.keep_keys("auth")
    assert (is_secret_key("CTX_TEST_KEY"), is_secret_key("auth")) == (True, False)
    redaction.reset_keys()
    assert (is_secret_key("CTX_TEST_KEY"), is_secret_key("auth")) == (False, True)


@pytest.mark.parametrize(("text", "redacted"), [
    ("ValueError: api_key=abc123 rejected", f"ValueError: api_key={MASK} rejected"),
    ("login failed, password: hunter2!", f"login failed, password: {MASK}"),
    ('{"client_secret": "s3 cr3t", "region": "eu"}',
     f'{{"client_secret": "{MASK}", "region": "eu"}}'),
    ("{'hf_token': 'abc', 'n': 1}", f"{{'hf_token': '{MASK}', 'n': 1}}"),
    ("Authorization: Basic dXNlcjpwYXNz", f"Authorization: {MASK}"),
    ("--aws-secret-access-key=wJal/rX", f"--aws-secret-access-key={MASK}"),
    ("ctx_test_key=ctx_test_value, max_tokens: 16", "ctx_test_key=ctx_test_value, max_tokens: 16"),
    ("KeyError: 'model' (unknown key: 'model')", "KeyError: 'model' (unknown key: 'model')"),
])
def test_credential_pairs_in_free_text_are_masked(text: str, redacted: str) -> None:
    """``key=value``, ``key: value`` and JSON-ish pairs under credential-like keys are masked."""
    assert redact_text(text) == redacted


def test_credential_environment_values_are_masked_in_text(
        user_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Values of credential-like variables of this process are masked wherever they appear,
    from four characters up; shorter ones, values such as ``true`` and variables that hold a
    setting about a credential (``*_MODE``, ``*_FILE``...) are left alone."""
    monkeypatch.setenv("HF_TOKEN", "Zq8vR2mK9xLp4TnW7yBc")
    monkeypatch.setenv("MYSVC_API_KEY", "q7Zx")
    monkeypatch.setenv("TINY_SECRET", "abc")
    monkeypatch.setenv("HF_HUB_DISABLE_TOKEN", "true")
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # a setting about a credential (Ray sets it)
    assert redact_text("sent Zq8vR2mK9xLp4TnW7yBc and q7Zx; abc is true, auth by token") == (
        f"sent {MASK} and {MASK}; abc is true, auth by token")
    monkeypatch.setenv("MYSVC_API_KEY", "r0tated")  # a changed value is picked up at once
    assert redact_text("q7Zx r0tated") == f"q7Zx {MASK}"


PLANTED_ENV = {
    "HF_TOKEN": "Zq8vR2mK9xLp4TnW7yBcXe31",  # realistic length, not in the ``hf_`` shape
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYENVPLANTED",
    "MYSVC_API_KEY": "q7Zx",  # short
    "DB_PASSWORD": "Pw9#",  # short
}
INLINE_KEY = "inl1ne-K3y-987"  # only ever written as ``api_key=...`` in a message
INLINE_SECRET = "cl1ent-S3cret"  # only ever written as ``"client_secret": "..."``
PLANTED = (*PLANTED_ENV.values(), INLINE_KEY, INLINE_SECRET)


def leaky_message(where: str) -> str:
    env = PLANTED_ENV
    return (f"{where} refused: api_key={INLINE_KEY} {{\"client_secret\": \"{INLINE_SECRET}\"}} "
            f"token {env['HF_TOKEN']} aws {env['AWS_SECRET_ACCESS_KEY']} "
            f"svc {env['MYSVC_API_KEY']} db {env['DB_PASSWORD']}")


class Raising:
    """A callback whose hook fails with credentials in its exception message."""

    def on_pre_download(self, ctx: NodeInitializationContext) -> None:
        raise ValueError(leaky_message("upstream"))


def test_planted_secrets_in_error_messages_reach_no_artefact(
        sinks: Sinks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_keys: None) -> None:
    """A hook and a step fail with credential pairs and credential environment values (of
    realistic and short lengths) in their messages; none of them is in the store file, the
    CLI's events, timeline and export, the log lines, the OTLP bodies or /metrics."""
    for name, value in PLANTED_ENV.items():
        monkeypatch.setenv(name, value)
    store = SQLiteEventStore(sinks.store_path)
    observers = [MetricsCallback(sinks.backend)]
    with pytest.raises(LLMInitError):
        initialize_node_sync(LLMConfig(model_id="tiny", callback_class=Raising),
                             event_store=store, steps=local_steps(), observers=observers,
                             tracer_provider=sinks.provider)
    with pytest.raises(LLMInitError):
        initialize_node_sync(LLMConfig(model_id="tiny"), event_store=store,
                             steps=local_steps(download=FailingStep(leaky_message("mirror"))),
                             observers=observers, tracer_provider=sinks.provider)
    store.close()
    tracing.shutdown(sinks.provider)
    sinks.receiver.wait_for_spans(lambda spans: sum(s.name == names.SPAN_INITIALIZE
                                              for s in spans) == 2)
    store_bytes = b"".join(p.read_bytes() for p in sorted(tmp_path.glob("events.sqlite*")))
    cli_out = {}
    for args in (("list", "--json"), ("export", "--all")):
        result = CliRunner().invoke(app, [*args, "--store", str(sinks.store_path)],
                                    env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        cli_out[" ".join(args)] = result.output
    for init_id in _init_ids(sinks.store_path):
        for command in ("timeline", "events"):
            result = CliRunner().invoke(app, [command, init_id, "--store", str(sinks.store_path),
                                              *(["--json"] if command == "events" else [])],
                                        env={"COLUMNS": "200"})
            assert result.exit_code == 0, result.output
            cli_out[f"{command} {init_id}"] = result.output
    artefacts = {
        "store file": store_bytes.decode("latin-1"),
        **{f"llm-init {k}": v for k, v in cli_out.items()},
        "log lines": sinks.logs.getvalue(),
        "OTLP bodies": b"".join(sinks.receiver.raw_bodies).decode("latin-1"),
        "/metrics": sinks.metrics_text(),
    }
    leaks = {name: [s for s in PLANTED if s in text] for name, text in artefacts.items()}
    assert leaks == {name: [] for name in artefacts}
    # The searches looked at the failures' messages, masked.
    for name in ("store file", "log lines", "OTLP bodies"):
        assert f"upstream refused: api_key={MASK}" in artefacts[name].replace('\\"', '"'), name
        assert f"mirror refused: api_key={MASK}" in artefacts[name].replace('\\"', '"'), name


def _init_ids(store_path: Path) -> list[str]:
    with sqlite3.connect(store_path) as db:
        return [row[0] for row in db.execute("SELECT DISTINCT init_id FROM events")]


AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
SLASHED_SECRET = "wJalr/XUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # 40 characters, ``/`` and ``+``


@pytest.mark.parametrize("text", [
    f"s3://{AWS_KEY_ID}:{SLASHED_SECRET}@bucket/p",
    f"s3://{AWS_KEY_ID}:{SLASHED_SECRET}@bucket",
    f"restore from s3://{AWS_KEY_ID}:{SLASHED_SECRET}@bucket/p/x.tar failed",
    f"s3://{AWS_KEY_ID}:a+b/c=d/{SLASHED_SECRET}@bucket/p",
    f"'s3://{AWS_KEY_ID}:{SLASHED_SECRET}@bucket/p'",
])
def test_url_credentials_holding_slashes_and_plus_signs_are_masked_whole(text: str) -> None:
    """A URL's user info is masked up to its last ``@``, however many ``/`` and ``+`` the
    password holds: no fragment of the key id or the secret stays in the text."""
    redacted = redact_text(text)
    assert f"s3://{MASK}@bucket" in redacted
    fragments = [*SLASHED_SECRET.replace("+", "/").split("/"), AWS_KEY_ID, "a+b", "c=d"]
    assert [f for f in fragments if f in redacted] == []


@pytest.mark.parametrize("text", [
    "https://host:8080/path@x", "https://registry:443/@scope/pkg", "https://h/a/b@c",
    "mail user@example.com",
])
def test_at_signs_in_url_paths_are_not_user_info(text: str) -> None:
    """An ``@`` after a URL's host (behind a port or in the path) is kept as it is."""
    assert redact_text(text) == text


@pytest.mark.parametrize("placeholder", ["testing", "minioadmin"])
def test_placeholder_secret_values_do_not_rewrite_ordinary_words(
        placeholder: str, user_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A credential variable holding a plain word (moto's ``testing``, MinIO's
    ``minioadmin``) does not turn that word into ``***`` in messages."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", placeholder)
    text = f"{placeholder} the download of c2-{placeholder} as {placeholder.upper()}"
    assert redact_text(text) == text


def test_a_real_looking_secret_value_is_still_masked_as_a_whole_token(
        user_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 40-character secret key in the environment is masked wherever it stands alone."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SLASHED_SECRET)
    assert redact_text(f"signed with {SLASHED_SECRET}, then '{SLASHED_SECRET}'.") == (
        f"signed with {MASK}, then '{MASK}'.")


def test_a_weak_secret_is_reported_once_by_name(
        user_keys: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A credential variable holding a weak value is named once in a warning, its value never."""
    monkeypatch.setattr(redaction._EnvSecrets, "warned", set())
    monkeypatch.setenv("MYSVC_WEAK_PASSWORD", "minioadmin")
    with caplog.at_level("WARNING", logger=redaction.__name__):
        redaction.environment_secrets(fresh=True)
        redaction.environment_secrets(fresh=True)
    warnings = [r.getMessage() for r in caplog.records if "MYSVC_WEAK_PASSWORD" in r.getMessage()]
    assert len(warnings) == 1
    assert "minioadmin" not in warnings[0]


@pytest.mark.parametrize("placeholder", ["testing", "minioadmin"])
def test_a_model_named_like_a_placeholder_secret_is_recorded_and_found_as_named(
        placeholder: str, tmp_path: Path, user_keys: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``AWS_SECRET_ACCESS_KEY`` set to a placeholder, the model ``c2-<placeholder>`` is
    recorded under its own name and ``llm-init list --model`` finds it."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", placeholder)
    path = tmp_path / "events.sqlite"
    store = SQLiteEventStore(path)
    initialize_node_sync(LLMConfig(model_id=f"c2-{placeholder}"), event_store=store,
                         steps=local_steps(), labels={"team": placeholder})
    store.close()
    result = CliRunner().invoke(app, ["list", "--json", "--model", f"c2-{placeholder}",
                                      "--store", str(path)])
    assert result.exit_code == 0, result.output
    assert f'"c2-{placeholder}"' in result.output
    assert MASK not in result.output


def test_identifiers_keep_a_strong_secret_value_they_happen_to_contain(
        user_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Model ids, callback names, paths and labels are names the user gave: environment values
    are not masked in them (their URL user info still is)."""
    monkeypatch.setenv("HF_TOKEN", "Zq8vR2mK9xLp4TnW7yBc")
    assert json_safe({"model_id": "org/Zq8vR2mK9xLp4TnW7yBc",
                      "callback_class": ["cb.Zq8vR2mK9xLp4TnW7yBc"],
                      "download_result": "/models/Zq8vR2mK9xLp4TnW7yBc"}) == {
        "model_id": "org/Zq8vR2mK9xLp4TnW7yBc", "callback_class": ["cb.Zq8vR2mK9xLp4TnW7yBc"],
        "download_result": "/models/Zq8vR2mK9xLp4TnW7yBc"}
    assert identifiers({"team": "Zq8vR2mK9xLp4TnW7yBc", "url": URL, "api_key": "k"}) == {
        "team": "Zq8vR2mK9xLp4TnW7yBc", "url": f"https://{MASK}@models.example.com/tiny",
        "api_key": MASK}


def test_a_long_line_is_searched_for_url_credentials_in_linear_time() -> None:
    """A 100 kB run of letters with an ``@`` in it (a base64 blob in a message) is redacted in
    well under a second, not in the minute a search tried at every letter took."""
    text = "blob " + "Q" * 100_000 + " by user@example.com"
    started = time.perf_counter()
    assert redact_text(text) == text
    assert time.perf_counter() - started < 5.0


def test_a_long_line_is_searched_for_credential_pairs_in_linear_time() -> None:
    """A 30 kB run of letters before a ``token=`` pair is redacted in well under a second,
    not in the tens of seconds a search tried at every letter took."""
    started = time.perf_counter()
    assert redact_text("Q" * 30_000 + " token=abc") == "Q" * 30_000 + f" token={MASK}"
    assert time.perf_counter() - started < 5.0


def test_a_long_run_of_separators_is_searched_for_query_parameters_in_linear_time() -> None:
    """40 k ``;`` before an ``a=b`` are redacted in well under a second, not in the
    seconds a search from every ``;`` took."""
    text = ";" * 40_000 + " a=b"
    started = time.perf_counter()
    assert redact_text(text) == text
    assert time.perf_counter() - started < 2.0


def test_a_passphrase_of_plain_letters_is_still_masked(
        user_keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """A credential of 16 or more letters in one case is a passphrase, not a word: masked."""
    monkeypatch.setenv("DB_PASSWORD", "correcthorsebatterystaple")
    assert redact_text("login with correcthorsebatterystaple failed") == (
        f"login with {MASK} failed")
