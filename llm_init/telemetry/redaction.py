"""Masking of secrets before any value reaches an event, span, log line or metric."""

from __future__ import annotations

import re
import traceback
from functools import lru_cache

MASK = "***"

# Whole words of a key that mark it as a credential. Word-based, so that engine settings such
# as ``max_num_batched_tokens`` or ``tokenizer_mode`` stay readable.
_SECRET_WORDS = frozenset({
    "token", "secret", "secrets", "password", "passwd", "pwd", "passphrase", "key", "apikey",
    "credential", "credentials", "auth", "authorization", "cookie", "privatekey", "accesskey",
    "signature",
})
_SECRET_SUFFIXES = ("token", "secret", "password", "passwd", "apikey", "accesskey", "credential",
                    "credentials")
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
# ``scheme://user:password@host``: everything between ``//`` and the last ``@`` before the path.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s]*@")
# ``?name=value`` / ``&name=value`` in URLs (pre-signed S3 URLs carry signatures and tokens).
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&#\s]+)=(?P<value>[^&#\s]*)")
# Well-known token shapes that leak even under innocent keys (Hugging Face, AWS key ids, bearer
# headers quoted in error messages).
_TOKEN_SHAPES = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
_BEARER = re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=\-]{8,}")


@lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    """Whether a key (an env var, a kwarg, a URL query parameter) names a credential."""
    words = [w.lower() for w in _WORD_SPLIT.split(key) if w]
    if any(w in _SECRET_WORDS for w in words):
        return True
    compact = "".join(words)
    return compact.endswith(_SECRET_SUFFIXES)


def _mask_query_param(match: re.Match[str]) -> str:
    if is_secret_key(match.group("name")):
        return f"{match.group('lead')}{match.group('name')}={MASK}"
    return match.group(0)


def redact_text(text: str) -> str:
    """Mask credentials embedded in free text: ``user:pass@`` and secret query parameters in
    URLs, bearer credentials, and known token shapes."""
    if "@" in text:
        text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    if "=" in text and ("?" in text or "&" in text or ";" in text):
        text = _QUERY_PARAM.sub(_mask_query_param, text)
    if "hf_" in text or "AKIA" in text or "ASIA" in text:
        text = _TOKEN_SHAPES.sub(MASK, text)
    if "Bearer" in text:
        text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return text


def exception_message(exc: BaseException) -> str:
    """``Type: message`` (or just ``Type``) of an exception, redacted."""
    text = str(exc)
    return redact_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def exception_stacktrace(exc: BaseException) -> str:
    """The formatted traceback of an exception, redacted (it repeats the message)."""
    return redact_text("".join(traceback.format_exception(exc)))
