"""``printable``: untrusted text shown as one safe line."""

from __future__ import annotations

import pytest

from llm_init.text import ELLIPSIS, printable


@pytest.mark.parametrize(("text", "shown"), [
    ("\x1b[2K\rwarm start: HIT\n", "\\x1b[2K\\rwarm start: HIT\\n"),
    ("a\x85b\x7fc\x00", "a\\x85b\\x7fc\\x00"),  # C1, DEL, NUL
    ("evil\u202egnp.exe", "evil\\u202egnp.exe"),  # a right-to-left override
    ("one\u2028two\ttab", "one\\u2028two\\ttab"),
    ("naïve 東京 a\u00a0b 😀 [bold]", "naïve 東京 a\u00a0b 😀 [bold]"),  # printable: as it is
])
def test_control_characters_become_visible_escapes(text: str, shown: str) -> None:
    """Control, format and line-separator characters are shown as escapes; the rest as is."""
    assert printable(text) == shown


def test_long_text_is_cut_to_the_limit_with_an_ellipsis() -> None:
    """More than ``limit`` characters are cut to ``limit``, the last one an ellipsis."""
    assert printable("x" * 50, limit=10) == "x" * 9 + ELLIPSIS
    assert printable("x" * 10, limit=10) == "x" * 10
