"""Converts llm-init's own ``LLMConfig`` to Ray Serve LLM's, for ``build_openai_app``.

From llm-init's own ``LLMConfig`` (``llm_init.LLMConfig``, as the README builds it) to Ray
Serve LLM's, so that ``build_openai_app({"llm_configs": [config]})`` deploys it.

| ``llm_init.LLMConfig`` | becomes, in ``ray.serve.llm.LLMConfig`` |
|---|---|
| ``model_id``, ``model_source`` | ``model_loading_config`` |
| ``engine_kwargs`` (``tensor_parallel_size``/``pipeline_parallel_size`` when not 1) | ``engine_kwargs`` |
| ``placement_bundles``, ``placement_strategy`` | ``placement_group_config`` (Ray's default without bundles) |
| ``runtime_env`` | ``runtime_env`` |
| ``callback_class``, ``callback_kwargs``, ``raise_error_on_callback``, ``hook_timeout_s``, ``placement_group_timeout_s``, ``enable_metrics`` | llm-init's settings of this model (``experimental_configs["llm_init"]``), each only where it is not the default, so the application's ``"llm_init"`` settings fill in the rest |
"""  # noqa: E501

from __future__ import annotations

from typing import Any

from llm_init.config import LLMConfig, NodeModelDownloadable
from llm_init.serve.settings import SETTINGS_KEY, ServeConfigError

# llm_init.LLMConfig field -> llm-init settings key (experimental_configs["llm_init"]).
_SETTINGS = {
    "callback_class": "callback_class",
    "callback_kwargs": "callback_kwargs",
    "raise_error_on_callback": "raise_error_on_callback",
    "hook_timeout_s": "hook_timeout_s",
    "placement_group_timeout_s": "placement_group_timeout_s",
    "enable_metrics": "metrics",
}
LLM_INIT_CONFIG = f"{LLMConfig.__module__}.{LLMConfig.__qualname__}"


def ray_llm_config(config: LLMConfig) -> Any:
    """Ray Serve LLM's ``LLMConfig`` for llm-init's own (see the module docs)."""
    from ray.serve.llm import LLMConfig as RayLLMConfig

    for name in ("local_node_download_model", "worker_node_download_model"):
        if getattr(config, name) != NodeModelDownloadable.MODEL_AND_TOKENIZER:
            raise ServeConfigError(
                f"{LLM_INIT_CONFIG}.{name}={getattr(config, name).value} cannot be carried to "
                "Ray Serve LLM; set ctx.local_node_download_model / worker_node_download_model "
                "from a callback's on_pre_download instead")
    loading: dict[str, Any] = {"model_id": config.model_id}
    if config.model_source is not None:
        loading["model_source"] = config.model_source
    engine_kwargs = dict(config.engine_kwargs)
    for name in ("tensor_parallel_size", "pipeline_parallel_size"):
        if getattr(config, name) != 1:
            engine_kwargs.setdefault(name, getattr(config, name))
    ray_fields: dict[str, Any] = {"model_loading_config": loading,
                                  "engine_kwargs": engine_kwargs}
    if config.placement_bundles is not None:
        ray_fields["placement_group_config"] = {"bundles": list(config.placement_bundles),
                                                "strategy": config.placement_strategy}
    if config.runtime_env is not None:
        ray_fields["runtime_env"] = dict(config.runtime_env)
    default = LLMConfig(model_id=config.model_id)
    settings = {key: getattr(config, name) for name, key in _SETTINGS.items()
                if getattr(config, name) != getattr(default, name)}
    if "callback_class" in settings:  # the kwargs belong to these classes, defaults or not
        settings["callback_kwargs"] = config.callback_kwargs
    if settings:
        ray_fields["experimental_configs"] = {SETTINGS_KEY: settings}
    try:
        return RayLLMConfig(**ray_fields)
    except ValueError as exc:  # pydantic's ValidationError
        raise ServeConfigError(f"{LLM_INIT_CONFIG} for {config.model_id!r} is not a valid "
                               f"ray.serve.llm.LLMConfig: {exc}") from exc
