"""llm-init's settings for Serve, the Ray version check, and the drop-in builders' rewriting of
Ray Serve LLM configs."""

from __future__ import annotations

import pytest

from llm_init.serve import (
    ENGINE_CLS_ENV,
    ENGINE_CLS_PATH,
    LLMInitSettings,
    ServeConfigError,
    check_ray_version,
)
from llm_init.serve.settings import merged
from llm_init.steps.ray_vllm import DefaultDownload


@pytest.mark.parametrize("version", ["2.60.0", "2.60.3rc1"])
def test_supported_ray_versions(version):
    """Ray 2.60.x is the one the engine seams were built against."""
    check_ray_version(version)


@pytest.mark.parametrize("version", ["2.59.1", "2.61.0", "3.0.0", "garbage"])
def test_other_ray_versions_fail_at_import_with_the_range(version):
    """Any other version fails, naming the supported range and the one found."""
    with pytest.raises(ImportError, match=rf"Ray 2\.60\.x only .*found Ray {version}"):
        check_ray_version(version)


def test_unknown_setting_names_the_key_and_a_close_match():
    """A misspelled key fails where the config is built, with a suggestion."""
    with pytest.raises(ServeConfigError, match="'status_prot'; did you mean 'status_port'"):
        LLMInitSettings.from_mapping({"status_prot": 8001})
    with pytest.raises(ServeConfigError, match="status_port must be 0-65535"):
        LLMInitSettings.from_mapping({"status_port": 70000})


def test_a_bad_heartbeat_interval_fails_where_the_config_is_built():
    """A negative or non-numeric heartbeat interval is refused naming the setting."""
    with pytest.raises(ServeConfigError, match=r"^llm_init\.heartbeat_interval_s must be a "
                                               r"finite number of seconds >= 0"):
        LLMInitSettings.from_mapping({"heartbeat_interval_s": -5})
    with pytest.raises(ServeConfigError, match="heartbeat_interval_s"):
        LLMInitSettings.from_mapping({"heartbeat_interval_s": "often"})
    assert LLMInitSettings.from_mapping({"heartbeat_interval_s": 2}).heartbeat_interval_s == 2


def test_overlap_weights_is_off_by_default_and_must_be_a_bool():
    """``overlap_weights`` defaults to the sequential start; a non-boolean is refused, named."""
    assert LLMInitSettings().overlap_weights is False
    assert LLMInitSettings.from_mapping({"overlap_weights": True}).overlap_weights is True
    with pytest.raises(ServeConfigError, match=r"^llm_init\.overlap_weights must be true or "):
        LLMInitSettings.from_mapping({"overlap_weights": "yes"})


def test_callback_specs_pair_classes_with_kwargs():
    """One class takes one mapping; several take a list of one mapping each."""
    one = LLMInitSettings(callback_class="pkg:A", callback_kwargs={"x": 1})
    assert one.callback_specs() == (["pkg:A"], [{"x": 1}])
    two = LLMInitSettings(callback_class=["pkg:A", "pkg:B"], callback_kwargs=[{}, {"y": 2}])
    assert two.callback_specs() == (["pkg:A", "pkg:B"], [{}, {"y": 2}])
    with pytest.raises(ServeConfigError, match="must be a list"):
        LLMInitSettings(callback_class=["pkg:A", "pkg:B"], callback_kwargs={"x": 1}
                        ).callback_specs()


class StepFactory:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    async def run(self, ctx, report) -> None:
        pass


def test_download_step_default_and_configured():
    """By default llm-init's download step (imported when it runs); else the named factory,
    called with ``download_options``."""
    default = LLMInitSettings(download_options={"max_workers": 2}).download()
    assert default == DefaultDownload({"max_workers": 2})
    step = LLMInitSettings(download_step=f"{__name__}:StepFactory",
                           download_options={"marker": "m"}).download()
    assert isinstance(step, StepFactory)
    assert step.marker == "m"
    with pytest.raises(ServeConfigError, match="cannot be imported"):
        LLMInitSettings(download_step="no.such.module:Step").download()


def test_later_settings_layers_win_key_by_key():
    assert merged({"a": 1, "b": 1}, None, {"b": 2}) == {"a": 1, "b": 2}


@pytest.fixture(scope="module")
def ray_llm_config():
    from ray.serve.llm import LLMConfig

    return LLMConfig(
        model_loading_config={"model_id": "m", "model_source": "/models/m"},
        runtime_env={"env_vars": {"KEEP": "1"}},
        experimental_configs={"llm_init": {"status_port": 9000}, "other": True})


def without_build_time(experimental: dict) -> dict:
    """``experimental_configs`` less the build time the builders stamp."""
    settings = dict(experimental["llm_init"])
    settings.pop("app_built_at")
    return {**experimental, "llm_init": settings}


def test_with_llm_init_stamps_the_build_time_for_the_replicas_launch_record(ray_llm_config):
    """Replicas measure how long they waited to be scheduled from the build (the deploy
    request), so the builder records when it ran."""
    import time

    from llm_init.serve import with_llm_init

    before = time.time()
    config = with_llm_init(ray_llm_config)
    assert before <= config.experimental_configs["llm_init"]["app_built_at"] <= time.time()


def test_with_llm_init_names_the_engine_class_and_layers_settings(ray_llm_config):
    """The copy's replicas start through llm-init: the engine class is in their environment,
    app-wide settings sit under the model's own, and the original is left alone."""
    from llm_init.serve import with_llm_init

    config = with_llm_init(ray_llm_config, {"status_port": 1, "event_store": "memory://"})
    assert config.runtime_env["env_vars"] == {"KEEP": "1", ENGINE_CLS_ENV: ENGINE_CLS_PATH}
    assert without_build_time(config.experimental_configs) == {
        "llm_init": {"status_port": 9000, "event_store": "memory://"}, "other": True}
    assert ray_llm_config.runtime_env == {"env_vars": {"KEEP": "1"}}
    assert ray_llm_config.experimental_configs["llm_init"] == {"status_port": 9000}


def test_with_llm_init_accepts_dicts_and_rejects_bad_settings(ray_llm_config):
    """A dict config (as in a YAML file) works; invalid settings fail in the driver."""
    from llm_init.serve import with_llm_init

    as_dict = {"model_loading_config": {"model_id": "m"}}
    assert without_build_time(with_llm_init(as_dict).experimental_configs) == {"llm_init": {}}
    with pytest.raises(ServeConfigError, match="unknown llm_init setting 'evnt_store'"):
        with_llm_init(as_dict, {"evnt_store": "x"})


def test_build_openai_app_takes_ray_args_plus_llm_init(ray_llm_config, monkeypatch):
    """Ray's builder gets Ray's args with every model rewritten; the ``llm_init`` key is
    consumed."""
    import ray.serve.llm

    from llm_init.serve import build_openai_app

    seen: dict = {}
    monkeypatch.setattr(ray.serve.llm, "build_openai_app", lambda args: seen.update(args) or "app")
    app = build_openai_app({"llm_configs": [ray_llm_config],
                            "ingress_deployment_config": {"num_replicas": 1},
                            "llm_init": {"event_store": "memory://"}})
    assert app == "app"
    assert seen.keys() == {"llm_configs", "ingress_deployment_config"}
    (config,) = seen["llm_configs"]
    assert without_build_time(config.experimental_configs)["llm_init"] == {
        "status_port": 9000, "event_store": "memory://"}
