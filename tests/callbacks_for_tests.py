"""Callback classes importable by path, for the config tests."""

from __future__ import annotations

from typing import Any


class Importable:
    def __init__(self, greeting: str = "hi") -> None:
        self.greeting = greeting

    def on_pre_download(self, ctx: Any) -> None:
        ctx.custom_data["greeting"] = self.greeting


class NoHooks:
    def helper(self) -> None:
        pass


class Misspelled:
    def on_pre_downlaod(self, ctx: Any) -> None:
        pass


class WrongSignature:
    def on_pre_download(self) -> None:
        pass


not_a_class = 42
