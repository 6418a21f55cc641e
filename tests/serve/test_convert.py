"""llm-init's own ``LLMConfig`` on Ray Serve: converted to Ray Serve LLM's, its callbacks
becoming the model's llm-init callbacks. No Serve needed: the app is built, not run."""

from __future__ import annotations

import pytest
from ray.serve.llm import LLMConfig as RayLLMConfig

import llm_init
from llm_init.serve import ENGINE_CLS_ENV, ENGINE_CLS_PATH, build_openai_app, with_llm_init
from llm_init.serve.configs import llm_init_config, settings_of
from llm_init.serve.settings import LLMInitSettings, ServeConfigError
from tests.callbacks_for_tests import Importable as Recorder


def own_config(**overrides: object) -> llm_init.LLMConfig:
    """As the README builds one, with what a CPU deployment needs."""
    fields: dict[str, object] = {
        "model_id": "tiny", "model_source": "/models/tiny",
        "engine_kwargs": {"dtype": "bfloat16", "max_model_len": 256},
        "placement_bundles": [{"CPU": 1}], "runtime_env": {"env_vars": {"A": "1"}},
        "callback_class": Recorder, "callback_kwargs": {"greeting": "r"},
        "raise_error_on_callback": False, "hook_timeout_s": 30.0}
    fields.update(overrides)
    return llm_init.LLMConfig(**fields)  # type: ignore[arg-type]  # fields of mixed types


def test_own_llm_config_becomes_rays_with_the_same_model_engine_and_placement():
    """Model id and source, engine kwargs, bundles and runtime env carry over; the replica
    starts through llm-init."""
    ray_config = with_llm_init(own_config())
    assert isinstance(ray_config, RayLLMConfig)
    assert (ray_config.model_id, ray_config.model_loading_config.model_source) == (
        "tiny", "/models/tiny")
    assert ray_config.engine_kwargs == {"dtype": "bfloat16", "max_model_len": 256}
    assert ray_config.placement_group_config == {"bundles": [{"CPU": 1}], "strategy": "PACK"}
    assert ray_config.runtime_env["env_vars"] == {"A": "1", ENGINE_CLS_ENV: ENGINE_CLS_PATH}


def test_its_callbacks_become_the_models_llm_init_callbacks():
    """callback_class/kwargs and the error policy are the model's llm-init settings, and the
    replica's llm-init config runs them."""
    ray_config = with_llm_init(own_config(), {"callback_class": "elsewhere:Ignored"})
    settings = settings_of(ray_config)
    assert (settings.callback_class, settings.callback_kwargs) == (Recorder, {"greeting": "r"})
    assert (settings.raise_error_on_callback, settings.hook_timeout_s) == (False, 30.0)
    replica_config = llm_init_config(ray_config, settings)
    assert replica_config.callback_classes == (Recorder,)
    assert replica_config.raise_error_on_callback is False


def test_unset_fields_leave_the_applications_settings():
    """Without callbacks of its own, the application's llm_init settings apply to the model."""
    config = own_config(callback_class=None, callback_kwargs={},
                        raise_error_on_callback=True, hook_timeout_s=None)
    settings = settings_of(with_llm_init(config, {"callback_class": Recorder}))
    assert settings.callback_class is Recorder
    assert settings.raise_error_on_callback is True


def test_parallel_sizes_go_into_the_engine_kwargs():
    """Ray reads tensor and pipeline parallelism from engine_kwargs."""
    ray_config = with_llm_init(own_config(tensor_parallel_size=2))
    assert ray_config.engine_kwargs["tensor_parallel_size"] == 2
    assert "pipeline_parallel_size" not in ray_config.engine_kwargs


def test_build_openai_app_takes_an_own_llm_config():
    """The README's config in build_openai_app builds an application, as Ray's does."""
    import ray
    from ray.serve.deployment import Application

    started_here = not ray.is_initialized()
    try:
        app = build_openai_app({"llm_configs": [own_config()]})
    finally:  # Ray's builder starts a local Ray; later tests expect none in this process
        if started_here:
            ray.shutdown()
    assert isinstance(app, Application)


def test_an_unsupported_entry_is_named_fully_qualified():
    """The error names each accepted type and the one given by module and name."""
    with pytest.raises(ServeConfigError) as caught:
        build_openai_app({"llm_configs": [42]})
    assert str(caught.value) == (
        "llm_configs entries must be a ray.serve.llm.LLMConfig, an llm_init.config.LLMConfig, "
        "a dict or a YAML path, got builtins.int")


def test_settings_of_the_wrong_type_are_named_fully_qualified():
    """LLMInitSettings from a list names builtins.list."""
    with pytest.raises(ServeConfigError, match=r"got builtins\.list$"):
        LLMInitSettings.from_mapping([])  # type: ignore[arg-type]  # a wrong type on purpose


def test_a_download_mode_ray_cannot_carry_is_an_error():
    """A non-default download mode fails naming the field, rather than being dropped."""
    with pytest.raises(ServeConfigError,
                       match=r"llm_init.config.LLMConfig.local_node_download_model=NONE"):
        with_llm_init(own_config(local_node_download_model="NONE"))
