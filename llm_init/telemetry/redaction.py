"""Masking of secrets before any value reaches an event, span, log line or metric."""

from __future__ import annotations

import re
from functools import lru_cache

MASK = "***"

# Whole words of a key that mark it as a credential. Word-based, so that engine settings such
# as ``max_num_batched_tokens`` or ``tokenizer_mode`` stay readable.
_SECRET_WORDS = frozenset({
    "token", "secret", "secrets", "password", "passwd", "pwd", "passphrase", "key", "apikey",
    "credential", "credentials", "auth", "authorization", "cookie", "privatekey", "accesskey",
})
_SECRET_SUFFIXES = ("token", "secret", "password", "passwd", "apikey", "accesskey", "credential",
                    "credentials")
_WORD_SPLIT = re.compile(r"[^a-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/@\s]+@")
# Well-known token shapes that leak even under innocent keys (Hugging Face, AWS key ids).
_TOKEN_SHAPES = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")


@lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether a mapping key (an env var, a kwarg name) names a credential."""
    words = [w.lower() for w in _WORD_SPLIT.split(key) if w]
    if any(w in _SECRET_WORDS for w in words):
        return True
    compact = "".join(words)
    return compact.endswith(_SECRET_SUFFIXES)


def redact_text(text: str) -> str:
    """Mask credentials embedded in free text: ``user:pass@`` in URLs and known token shapes."""
    if "@" in text:
        text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    if "hf_" in text or "AKIA" in text or "ASIA" in text:
        text = _TOKEN_SHAPES.sub(MASK, text)
    return text
