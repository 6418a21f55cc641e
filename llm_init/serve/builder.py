"""Drop-in builders for ``ray.serve.llm``'s: the same arguments, plus llm-init's settings.

``build_openai_app(args)`` takes the dict ``ray.serve.llm.build_openai_app`` takes, with one more
optional key, ``"llm_init"`` (``LLMInitSettings`` as a dict, for every model); each model may
also carry its own in ``experimental_configs["llm_init"]``, which wins key by key. Every model's
replica then starts through llm-init: its runtime environment names llm-init's engine class in
``RAYLLM_VLLM_ENGINE_CLS``, which Ray Serve LLM's ``LLMServer`` reads.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from typing import Any

from llm_init.config import LLMConfig as OwnLLMConfig
from llm_init.serve.convert import LLM_INIT_CONFIG, ray_llm_config
from llm_init.serve.settings import (
    SETTINGS_KEY,
    LLMInitSettings,
    ServeConfigError,
    merged,
    qualified_name,
)

ENGINE_CLS_ENV = "RAYLLM_VLLM_ENGINE_CLS"
ENGINE_CLS_PATH = "llm_init.serve.engine.LLMInitVLLMEngine"

_log = logging.getLogger(__name__)


def with_llm_init(llm_config: Any, settings: Mapping[str, Any] | LLMInitSettings | None = None
                  ) -> Any:
    """A copy of a Ray Serve ``LLMConfig`` (or its dict, a YAML file path, or llm-init's own
    ``llm_init.LLMConfig``, converted by ``llm_init.serve.convert``) whose replicas
    start through llm-init, with ``settings`` under its own ``experimental_configs`` ones, and
    the time of this call as ``app_built_at`` (with ``serve run``/``serve deploy`` the builder
    runs as the deploy starts, so replicas measure their scheduling from it)."""
    from ray.serve.llm import LLMConfig

    if isinstance(llm_config, str):
        config = LLMConfig.from_file(llm_config)
    elif isinstance(llm_config, Mapping):
        config = LLMConfig.model_validate(dict(llm_config))
    elif isinstance(llm_config, LLMConfig):
        config = llm_config
    elif isinstance(llm_config, OwnLLMConfig):
        config = ray_llm_config(llm_config)
    else:
        raise ServeConfigError(
            f"llm_configs entries must be a ray.serve.llm.LLMConfig, an {LLM_INIT_CONFIG}, a "
            f"dict or a YAML path, got {qualified_name(type(llm_config))}")
    if isinstance(settings, LLMInitSettings):
        settings = settings.to_dict()
    experimental = dict(config.experimental_configs or {})
    layered = merged(settings, experimental.get(SETTINGS_KEY), {"app_built_at": time.time()})
    LLMInitSettings.from_mapping(layered)  # fail in the driver, not in every replica
    experimental[SETTINGS_KEY] = layered
    runtime_env = copy.deepcopy(dict(config.runtime_env or {}))
    env_vars = dict(runtime_env.get("env_vars") or {})
    named = env_vars.setdefault(ENGINE_CLS_ENV, ENGINE_CLS_PATH)
    if named != ENGINE_CLS_PATH:
        _log.info("llm-init: %s keeps %s=%s (it must subclass %s)", config.model_id,
                  ENGINE_CLS_ENV, named, ENGINE_CLS_PATH)
    runtime_env["env_vars"] = env_vars
    return config.model_copy(update={"experimental_configs": experimental,
                                     "runtime_env": runtime_env})


def build_openai_app(builder_config: dict[str, Any]) -> Any:
    """``ray.serve.llm.build_openai_app`` with every model starting through llm-init; the args
    may hold an ``"llm_init"`` settings dict (see the module docs)."""
    from ray.serve.llm import build_openai_app as ray_build_openai_app

    args = _as_dict(builder_config)
    app_settings = args.pop(SETTINGS_KEY, None)
    LLMInitSettings.from_mapping(app_settings)
    if "llm_configs" not in args:
        raise ServeConfigError("build_openai_app args need 'llm_configs'")
    args["llm_configs"] = [with_llm_init(c, app_settings) for c in args["llm_configs"]]
    return ray_build_openai_app(args)


def build_llm_deployment(llm_config: Any, *, name_prefix: str | None = None,
                         bind_kwargs: dict[str, Any] | None = None,
                         override_serve_options: dict[str, Any] | None = None,
                         deployment_cls: type | None = None,
                         llm_init: Mapping[str, Any] | LLMInitSettings | None = None) -> Any:
    """``ray.serve.llm.build_llm_deployment`` whose replicas start through llm-init."""
    from ray.serve.llm import build_llm_deployment as ray_build_llm_deployment

    return ray_build_llm_deployment(
        with_llm_init(llm_config, llm_init), name_prefix=name_prefix, bind_kwargs=bind_kwargs,
        override_serve_options=override_serve_options, deployment_cls=deployment_cls)


def _as_dict(builder_config: Any) -> dict[str, Any]:
    if isinstance(builder_config, Mapping):
        return dict(builder_config)
    fields = getattr(type(builder_config), "model_fields", None)  # an LLMServingArgs
    if fields is not None:
        return {name: getattr(builder_config, name) for name in fields}
    raise ServeConfigError(f"build_openai_app takes a dict of args, got "
                           f"{qualified_name(type(builder_config))}")
