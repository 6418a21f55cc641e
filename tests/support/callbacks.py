"""Callbacks shared by several test modules."""

from __future__ import annotations

from typing import Any


class Busy:
    def on_pre_initialization(self, ctx: Any) -> None:
        ctx.runtime_env = {"env_vars": {"A": "1", "HF_TOKEN": "hf_secretsecretsecretsecret00"}}

    def on_pre_download(self, ctx: Any) -> None:
        ctx.custom_data["n"] = 1
        ctx.custom_data["gone"] = "soon"

    def on_post_download(self, ctx: Any) -> None:
        ctx.custom_data["n"] += 1
        del ctx.custom_data["gone"]

    def on_pre_engine_init(self, ctx: Any) -> None:
        ctx.extra_init_kwargs["max_model_len"] = 256
