"""Specification of ``NodeInitializationContext``: guarded fields with named culprits."""

from __future__ import annotations

from typing import Any

import pytest

from llm_init import (
    CallbackError,
    ContextFieldError,
    InMemoryEventStore,
    LLMConfig,
    NodeModelDownloadable,
    initialize_node_sync,
)
from tests.support.steps import setting_steps


class SetsInitId:
    def on_pre_download(self, ctx: Any) -> None:
        ctx.init_id = "mine"


class SetsBadType:
    def on_pre_engine_init(self, ctx: Any) -> None:
        ctx.extra_init_kwargs = ["not", "a", "dict"]


class SetsDownloadMode:
    def on_pre_download(self, ctx: Any) -> None:
        ctx.worker_node_download_model = "TOKENIZER_ONLY"


@pytest.mark.parametrize(("cls", "hook", "field"), [
    (SetsInitId, "on_pre_download", "init_id"),
    (SetsBadType, "on_pre_engine_init", "extra_init_kwargs"),
])
def test_bad_assignment_names_callback_hook_and_field(cls: type, hook: str, field: str) -> None:
    """Assigning a read-only field or a wrongly typed value names callback, hook and field."""
    with pytest.raises(CallbackError) as info:
        initialize_node_sync(LLMConfig(model_id="m", callback_class=cls),
                             event_store=InMemoryEventStore(), steps=setting_steps())
    cause = info.value.__cause__
    assert isinstance(cause, ContextFieldError)
    assert f"tests.test_context.{cls.__qualname__}.{hook} set ctx.{field}" in str(cause)


def test_a_wrongly_typed_value_names_its_type_fully_qualified() -> None:
    """The error says which type was given, by module and name."""
    with pytest.raises(CallbackError) as info:
        initialize_node_sync(LLMConfig(model_id="m", callback_class=SetsBadType),
                             event_store=InMemoryEventStore(), steps=setting_steps())
    assert str(info.value.__cause__).endswith("which must be a dict, got builtins.list")


def test_download_mode_accepts_the_plain_string() -> None:
    """The user example assigns a string; the context stores the enum member."""
    ctx = initialize_node_sync(LLMConfig(model_id="m", callback_class=SetsDownloadMode),
                               event_store=InMemoryEventStore(), steps=setting_steps())
    assert ctx.worker_node_download_model is NodeModelDownloadable.TOKENIZER_ONLY
