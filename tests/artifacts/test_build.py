"""``llm_init.artifacts.build``'s reading of Serve configs and the ``warm build`` command's
checks, without an engine (tests/e2e/test_warm_build.py starts a real one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llm_init.artifacts.build import serve_targets
from llm_init.cli import app
from llm_init.serve.settings import ServeConfigError

pytest.importorskip("ray.serve.llm")
runner = CliRunner()


def serve_file(llm_init: dict[str, object], model_settings: dict[str, object]) -> dict[str, object]:
    entry = {"model_loading_config": {"model_id": "tiny", "model_source": "/models/tiny"},
             "engine_kwargs": {"max_model_len": 256, "enforce_eager": False},
             "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1"}},
             "experimental_configs": {"llm_init": model_settings}}
    return {"applications": [{"name": "llm", "import_path": "llm_init.serve:build_openai_app",
                              "args": {"llm_configs": [entry], "llm_init": llm_init}}]}


def test_a_serve_config_gives_each_model_as_its_replicas_see_it() -> None:
    """Each model of a `serve deploy` file becomes the LLMConfig its replicas build: its
    source, engine arguments and runtime environment, and llm-init's settings with the
    model's own over the application's, key by key."""
    (target,) = serve_targets(serve_file(
        {"artifact_store": "s3://app/warm", "event_store": "sqlite:///app.sqlite"},
        {"artifact_store": {"url": "s3://model/warm", "model_link_dir": "/links"}}))
    config = target.llm_config
    assert config.model_id == "tiny"
    assert config.model_source == "/models/tiny"
    assert config.engine_kwargs == {"max_model_len": 256, "enforce_eager": False}
    assert config.artifact_store == {"url": "s3://model/warm", "model_link_dir": "/links"}
    assert (config.runtime_env or {})["env_vars"]["OMP_NUM_THREADS"] == "1"
    assert target.event_store == "sqlite:///app.sqlite"


def test_a_serve_config_without_models_is_refused() -> None:
    """A config with no llm_configs is an error that says so."""
    with pytest.raises(ServeConfigError, match="no llm_configs"):
        serve_targets({"applications": [{"name": "x", "args": {}}]})


def test_warm_build_of_a_config_without_an_artifact_store_exits_1(tmp_path: Path) -> None:
    """`warm build` of a model that names no artifact store exits 1 naming the model, before
    any engine starts."""
    config = tmp_path / "serve.yaml"
    config.write_text(json.dumps(serve_file({}, {})), encoding="utf-8")
    result = runner.invoke(app, ["warm", "build", str(config)])
    assert result.exit_code == 1
    assert "tiny has no artifact_store" in result.output


def test_warm_build_needs_a_config_or_a_model() -> None:
    """`warm build` with neither a Serve config nor --model exits 1 saying what it needs."""
    result = runner.invoke(app, ["warm", "build"])
    assert result.exit_code == 1
    assert "--model" in result.output
