"""Untrusted text made safe to show: as data, never as terminal control or extra lines.

What a store, a peer or an old log says is untrusted."""

from __future__ import annotations

import unicodedata

_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
ELLIPSIS = "…"


def printable(text: object, limit: int | None = 200) -> str:
    """``text`` as one line safe for a terminal: control characters (C0, C1, DEL, ESC,
    newlines), format characters (bidirectional overrides that make a name read as another)
    and line separators become visible escapes (``\\x1b``, ``\\n``, ``\\u202e``), and more than
    ``limit`` characters are cut, with ``…`` at the end."""
    value = text if isinstance(text, str) else str(text)
    safe = value if value.isprintable() else "".join(_escape(ch) for ch in value)
    if limit is not None and len(safe) > limit:
        return safe[:max(limit - 1, 0)] + ELLIPSIS
    return safe


def _escape(ch: str) -> str:
    # ``isprintable`` is false for every space but " "; a no-break space is shown as it is.
    if ch.isprintable() or unicodedata.category(ch) == "Zs":
        return ch
    if ch in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[ch]
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


__all__ = ["ELLIPSIS", "printable"]
