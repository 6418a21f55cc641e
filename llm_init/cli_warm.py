"""The ``llm-init warm`` commands; they live in ``llm_init.cli.warm``."""

from llm_init.cli.warm import app

__all__ = ["app"]
