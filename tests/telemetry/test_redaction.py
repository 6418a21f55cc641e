"""Secrets never reach events, spans, logs or metrics: unit rules, then every real artefact."""

from __future__ import annotations

import io
import sqlite3
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from llm_init import LLMConfig, NodeInitializationContext, SQLiteEventStore, initialize_node_sync
from llm_init.summary import json_safe
from llm_init.telemetry import names, tracing
from llm_init.telemetry.backends import PrometheusBackend
from llm_init.telemetry.logs import configure_logging
from llm_init.telemetry.metrics import MetricsCallback
from llm_init.telemetry.redaction import MASK, is_secret_key, redact_text
from tests.support.otlp_receiver import OTLPReceiver
from tests.support.steps import local_steps

HF_TOKEN = "hf_plantedTokenValue0123456789ABCDEFG"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYPLANTEDKEY"
PASSWORD = "pa55w0rd-planted"
URL = f"https://alice:{PASSWORD}@models.example.com/tiny"
SECRETS = (HF_TOKEN, AWS_SECRET, PASSWORD)


@pytest.mark.parametrize(("key", "secret"), [
    ("HF_TOKEN", True), ("AWS_SECRET_ACCESS_KEY", True), ("api_key", True), ("apiKey", True),
    ("Authorization", True), ("db_password", True), ("GOOGLE_APPLICATION_CREDENTIALS", True),
    ("x-amz-signature", True), ("max_num_batched_tokens", False), ("tokenizer_mode", False),
    ("model_id", False), ("keyboard", False),
])
def test_credential_like_keys_are_recognized(key: str, secret: bool) -> None:
    """Keys are split into words; a credential word (or suffix) marks the key as secret."""
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


def test_planted_secrets_reach_no_artefact(tmp_path: Path, receiver: OTLPReceiver,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Run with secrets in runtime_env, callback_kwargs, extra_init_kwargs, custom_data, the
    model id and an error message; then search the event store file, the OTLP request bodies,
    the log lines and the /metrics text for them."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
    provider = tracing.configure_tracing(set_global=False)
    assert provider is not None
    logs = io.StringIO()
    configure_logging("DEBUG", stream=logs, fmt="json")
    backend = PrometheusBackend(CollectorRegistry(), port=0, addr="127.0.0.1")
    store_path = tmp_path / "events.sqlite"
    config = LLMConfig(
        model_id=URL, model_source=URL, callback_class=Planting,
        callback_kwargs={"aws_secret_access_key": AWS_SECRET, "mirror": URL},
        runtime_env={"env_vars": {"HF_TOKEN": HF_TOKEN, "AWS_SECRET_ACCESS_KEY": AWS_SECRET}},
        engine_kwargs={"download_dir": URL}, raise_error_on_callback=False)
    store = SQLiteEventStore(store_path)
    initialize_node_sync(config, event_store=store, steps=local_steps(),
                         observers=[MetricsCallback(backend)], tracer_provider=provider)
    store.close()
    tracing.shutdown(provider)
    receiver.wait_for_spans(lambda spans: any(s.name == names.SPAN_INITIALIZE for s in spans))
    with sqlite3.connect(store_path) as db:
        rows = "\n".join(repr(row) for row in db.execute("SELECT * FROM events"))
    with urllib.request.urlopen(f"http://127.0.0.1:{backend.server_port}/metrics") as response:
        metrics_text = response.read().decode()
    artefacts = {
        "event store": rows,
        "OTLP bodies": b"".join(receiver.raw_bodies).decode("latin-1"),
        "log lines": logs.getvalue(),
        "/metrics": metrics_text,
    }
    leaks = {name: [s for s in SECRETS if s in text] for name, text in artefacts.items()}
    assert leaks == {name: [] for name in artefacts}
    # The searches looked at the right things: each artefact records the masked values.
    assert {name: "***" in text for name, text in artefacts.items()} == dict.fromkeys(
        artefacts, True)
    assert "RuntimeError: mirror https://***@models.example.com/tiny refused ***" in rows
