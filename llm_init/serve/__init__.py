"""llm-init for Ray Serve LLM: a drop-in ``build_openai_app`` and the engine class behind it.

Switch an app by changing one import (``from llm_init.serve import build_openai_app``) or by
naming ``llm_init.serve.engine.LLMInitVLLMEngine`` in ``RAYLLM_VLLM_ENGINE_CLS``; docs/serve.md
has the details. Ray Serve LLM's engine seams are internal, so one Ray minor version is
supported, and importing this package checks it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llm_init.errors import LLMInitError

SUPPORTED_RAY = ((2, 60), (2, 61))  # [from, to)


def check_ray_version(version: str | None = None) -> None:
    """Raise ``ImportError`` unless Ray is installed in the supported range."""
    if version is None:
        try:
            import ray
        except ImportError as exc:
            raise ImportError("llm_init.serve needs Ray Serve: pip install 'llm-init[serve]'"
                              ) from exc
        version = str(ray.__version__)
    try:
        found = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        found = (0, 0)
    low, high = SUPPORTED_RAY
    if not low <= found < high:
        raise ImportError(
            f"llm_init.serve supports Ray {low[0]}.{low[1]}.x only (it builds on Ray Serve LLM's "
            f"internal engine API), found Ray {version}; install 'ray[serve]>={low[0]}.{low[1]},"
            f"<{high[0]}.{high[1]}'")


check_ray_version()

from llm_init.serve.builder import (  # noqa: E402  (after the version check)
    ENGINE_CLS_ENV,
    ENGINE_CLS_PATH,
    build_llm_deployment,
    build_openai_app,
    with_llm_init,
)
from llm_init.serve.settings import (  # noqa: E402
    SETTINGS_KEY,
    LLMInitSettings,
    ServeConfigError,
)
from llm_init.serve.status import StatusServer, status_document  # noqa: E402

if TYPE_CHECKING:
    from ray.serve.llm import LLMConfig

    from llm_init.serve.engine import LLMInitVLLMEngine

__all__ = [
    "ENGINE_CLS_ENV",
    "ENGINE_CLS_PATH",
    "SETTINGS_KEY",
    "LLMConfig",
    "LLMInitError",
    "LLMInitSettings",
    "LLMInitVLLMEngine",
    "ServeConfigError",
    "StatusServer",
    "build_llm_deployment",
    "build_openai_app",
    "check_ray_version",
    "status_document",
    "with_llm_init",
]


def __getattr__(name: str) -> Any:
    # Both import vLLM (tens of seconds): only on first use.
    if name == "LLMConfig":
        from ray.serve.llm import LLMConfig

        return LLMConfig
    if name == "LLMInitVLLMEngine":
        from llm_init.serve.engine import LLMInitVLLMEngine

        return LLMInitVLLMEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
