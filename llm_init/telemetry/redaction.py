"""Masking of secrets before any value reaches an event, span, log line or metric.

A key names a credential when one of its whole name segments does (see ``is_secret_key``);
users add names to mask or to keep with ``LLM_INIT_REDACT_KEYS`` / ``LLM_INIT_KEEP_KEYS`` or
``redact_keys`` / ``keep_keys``. Free text is searched for credentials in URLs, ``key=value``
pairs under such keys, known token shapes, and the values of the process's credential-like
environment variables.
"""

from __future__ import annotations

import logging
import os
import re
import time
import traceback
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, ClassVar

_log = logging.getLogger(__name__)

MASK = "***"
ENV_REDACT_KEYS = "LLM_INIT_REDACT_KEYS"
ENV_KEEP_KEYS = "LLM_INIT_KEEP_KEYS"
# Values of credential-like environment variables shorter than this are not searched for in
# text: masking every "1" or "ab" would destroy the text and hide nothing worth hiding.
MIN_ENV_SECRET_LEN = 4
# A value of letters in one case shorter than this is a word (``testing``, ``minioadmin``), not
# searched for in text; a longer one is a passphrase and is.
MIN_WORD_SECRET_LEN = 16
# Placeholder credentials of local test servers (moto, localstack, MinIO) and tutorials that are
# not plain words: weak secrets, like plain words, which are never searched for in text.
WEAK_SECRET_VALUES = frozenset({
    "minio123", "changeme", "changeit", "test123", "admin123", "secret123", "password1",
    "passw0rd", "p@ssw0rd", "letmein", "12345678", "123456789", "1234567890",
})
# Setting-like values that credential-like variables sometimes hold (``HF_HUB_..._TOKEN=false``).
_NOT_SECRET_VALUES = frozenset({"true", "false", "none", "null", "auto", "default", "off", "on",
                                "yes", "no"})
# A credential-like variable whose name ends in one of these holds a setting about the
# credential, not the credential (``RAY_AUTH_MODE=token``, ``SSH_AUTH_SOCK``,
# ``AWS_SHARED_CREDENTIALS_FILE``): its value is not searched for in text.
_SETTING_SEGMENTS = frozenset({
    "mode", "type", "kind", "method", "enabled", "enable", "disabled", "disable", "file", "path",
    "dir", "url", "uri", "endpoint", "host", "port", "sock", "socket", "region", "provider",
    "timeout", "ttl", "version", "scheme", "format", "name", "user", "username", "expiry",
    "expires", "duration", "refresh", "level",
})

# Name segments that make a key a credential wherever they stand. Whole segments, so that engine
# settings such as ``max_num_batched_tokens`` or ``tokenizer_mode`` stay readable.
_SECRET_WORDS = frozenset({
    "token", "secret", "secrets", "password", "passwd", "passphrase", "credential",
    "credentials", "auth", "authorization", "cookie", "cookies", "signature", "apikey",
    "accesskey", "privatekey", "secretkey", "authtoken", "sessiontoken",
})
# ``key`` alone is a credential; after one of these it is too (``api_key``, ``ACCESS_KEY_ID``);
# after anything else it is an ordinary name (``ctx_test_key``, ``cache_key``).
_KEY_WORDS = frozenset({"key", "keys"})
_KEY_QUALIFIERS = frozenset({
    "api", "access", "private", "secret", "client", "encryption", "signing", "master", "account",
    "service", "auth", "ssh", "license", "subscription", "session", "shared", "storage", "app",
    "admin", "consumer", "hmac", "sas", "openai", "anthropic",
})
# Segments run together (``HFTOKEN``, ``xapikey``) still name a credential by their ending.
_SECRET_SUFFIXES = ("token", "secret", "password", "passwd", "passphrase", "apikey",
                    "accesskey", "privatekey", "secretkey", "credential", "credentials")
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")
# ``scheme://user:password@host``: everything between ``//`` and the last ``@`` before the path;
# after a ``user:`` the password may hold ``/`` (AWS secret keys do), so it runs to the last ``@``
# that a host follows, unless what follows the ``:`` is a port (``host:8080/a@b`` is a path).
# A scheme starts a word, and every run is bounded: unbounded runs tried at every position made
# a 100 kB line of letters take a minute.
_URL_CREDENTIALS = re.compile(
    r"(?<![A-Za-z0-9+.\-])(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]{0,31}://)"
    r"(?:[^/?#\s\"'<>@:]{0,256}:(?!\d{0,5}(?:[/?#\s\"'<>]|$))[^\s\"'<>]{0,2048}@"
    r"(?=[^/?#\s\"'<>@]{0,256}(?:[/?#\s\"'<>]|$))"
    r"|[^/?#\s]{0,2048}@)")
# ``?name=value`` / ``&name=value`` in URLs (pre-signed S3 URLs carry signatures and tokens).
# The name is bounded and holds no lead character: a run of ``;`` is not tried at each one.
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&#;?\s]{1,256})=(?P<value>[^&#\s]*)")
# Well-known token shapes that leak even under innocent keys (Hugging Face, AWS key ids, bearer
# headers quoted in error messages).
_TOKEN_SHAPES = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")
_BEARER = re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=\-]{8,}")
# ``key=value``, ``key: value``, ``"key": "value"``, ``'key': 'value'`` anywhere in text. A hint
# (a credential-ish word right before the separator) guards the full pattern, which is slower.
_PAIR_HINT = re.compile(r"(?i)(?:key|token|secret|pass|auth|cred|cookie|sign)[\w.\-]*['\"]?"
                        r"[ \t]*[:=]")
# The key starts a word and is bounded, so that a long run of letters is not tried at each one.
_PAIR = re.compile(
    r"""(?P<kq>["']?)(?<![A-Za-z0-9_])(?P<key>[A-Za-z_][A-Za-z0-9_.\-]{0,127})(?P=kq)"""
    r"""(?P<sep>[ \t]*[:=][ \t]*)"""
    r"""(?:(?P<vq>["'])(?P<quoted>(?:\\.|(?!(?P=vq))[^\\\n])*)(?P=vq)"""
    r"""|(?P<plain>(?:(?:Bearer|Basic|Token|Digest)[ \t]+)?[^\s,;&'"()\[\]{}<>]+))""")


class _UserKeys:
    """Names added with ``redact_keys`` / ``keep_keys`` (the environment's are read on use)."""

    redact: frozenset[str] = frozenset()
    keep: frozenset[str] = frozenset()
    version = 0
    seen: tuple[object, object, int] = (None, None, -1)
    sets: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())


def _names(raw: str | Iterable[str]) -> frozenset[str]:
    items = raw.split(",") if isinstance(raw, str) else raw
    return frozenset(n.strip().lower() for n in items if n.strip())


def redact_keys(*names: str) -> None:
    """Mask values under these key names too (case-insensitive, the whole name), in addition
    to the built-in credential names and ``LLM_INIT_REDACT_KEYS``."""
    _UserKeys.redact |= _names(names)
    _UserKeys.version += 1


def keep_keys(*names: str) -> None:
    """Never mask values just because of these key names (case-insensitive, the whole name),
    like ``LLM_INIT_KEEP_KEYS``. Text inside the values is still searched for credentials."""
    _UserKeys.keep |= _names(names)
    _UserKeys.version += 1


def reset_keys() -> None:
    """Forget the names added with ``redact_keys`` and ``keep_keys``."""
    _UserKeys.redact, _UserKeys.keep = frozenset(), frozenset()
    _UserKeys.version += 1


# Redaction looks at the environment for every value: on POSIX ``os.environb`` (kept in sync
# with ``os.environ``) is read, which skips the decoding ``os.environ.get`` does and takes any
# bytes, decodable or not; values are decoded only when they change.
_RAW_ENVIRON: Mapping[Any, Any] = os.environb if os.supports_bytes_environ else os.environ


def _raw_key(name: str) -> object:
    return os.fsencode(name) if os.supports_bytes_environ else name


def _raw_get(raw_key: object) -> object:
    return _RAW_ENVIRON.get(raw_key)


_RAW_REDACT_KEYS, _RAW_KEEP_KEYS = _raw_key(ENV_REDACT_KEYS), _raw_key(ENV_KEEP_KEYS)


def _decoded(raw: object) -> str:
    if raw is None:
        return ""
    return os.fsdecode(raw) if isinstance(raw, bytes) else str(raw)


def _user_sets() -> tuple[frozenset[str], frozenset[str]]:
    environ = _RAW_ENVIRON
    seen = (environ.get(_RAW_REDACT_KEYS), environ.get(_RAW_KEEP_KEYS), _UserKeys.version)
    if seen != _UserKeys.seen:
        _UserKeys.sets = (_names(_decoded(seen[0])) | _UserKeys.redact,
                          _names(_decoded(seen[1])) | _UserKeys.keep)
        _UserKeys.seen = seen
    return _UserKeys.sets


def is_secret_key(key: str) -> bool:
    """Whether a key (an env var, a kwarg, a URL query parameter) names a credential: a name
    added to mask, or (unless added to keep) one with a credential segment (``token``,
    ``secret``, ``password``, ``auth`` ...), ``key`` alone or after ``api``, ``access``,
    ``private``, ``secret`` ..., or run-together segments ending in one (``HFTOKEN``)."""
    redact, keep = _user_sets()
    return _classify(key, redact, keep)


@lru_cache(maxsize=4096)
def _classify(key: str, redact: frozenset[str], keep: frozenset[str]) -> bool:
    name = key.strip().lower()
    if name in redact:
        return True
    if name in keep:
        return False
    return _builtin_secret(key)


def _builtin_secret(key: str) -> bool:
    words = [w.lower() for w in _WORD_SPLIT.split(key) if w]
    if not words:
        return False
    for i, word in enumerate(words):
        if word in _SECRET_WORDS:
            return True
        if word in _KEY_WORDS and (len(words) == 1 or (i > 0 and words[i - 1] in _KEY_QUALIFIERS)):
            return True
        # ``db_pwd`` is a password; ``PWD`` and ``OLDPWD`` are the shell's directories.
        if word == "pwd" and i > 0 and words[i - 1] != "old":
            return True
    return "".join(words).endswith(_SECRET_SUFFIXES)


# The environment is re-read at least this often, whatever changed (a variable removed and a
# credential added between two looks leave the count the same), and always for an exception.
ENV_RESCAN_S = 1.0


class _EnvSecrets:
    """The values of the process's credential-like environment variables, re-read when a
    variable is added or removed, one of them changes, the key names change, or
    ``ENV_RESCAN_S`` has passed."""

    checked_at = -ENV_RESCAN_S
    size = -1
    version: object = None
    watched: tuple[tuple[object, object], ...] = ()
    values: tuple[str, ...] = ()
    patterns: tuple[tuple[str, re.Pattern[str]], ...] = ()
    warned: ClassVar[set[str]] = set()  # variables already reported as holding a weak secret


def is_weak_secret(value: str) -> bool:
    """Whether a credential's value is too short or too common to search for in text: shorter
    than ``MIN_ENV_SECRET_LEN``, a setting word (``true``), a word of letters in one case
    shorter than ``MIN_WORD_SECRET_LEN`` (``testing``, ``minioadmin``, ``Secret``; a longer
    one is a passphrase), a number of under 8 digits, or a known placeholder
    (``WEAK_SECRET_VALUES``). Masking such a value would rewrite ordinary words and names."""
    plain = value.strip()
    lower = plain.lower()
    if len(plain) < MIN_ENV_SECRET_LEN or lower in _NOT_SECRET_VALUES or plain == MASK:
        return True
    if lower in WEAK_SECRET_VALUES:
        return True
    if (plain.isalpha() and len(plain) < MIN_WORD_SECRET_LEN
            and (plain.islower() or plain.isupper() or plain.istitle())):
        return True
    return plain.isdigit() and len(plain) < 8


def _whole_token(value: str) -> re.Pattern[str]:
    # A secret is masked where it stands alone, not where it is part of a longer word or name
    # (``c2-r0tated`` keeps its ``r0tated`` unless that is the whole token).
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])")


def environment_secrets(*, fresh: bool = False) -> tuple[str, ...]:
    """Values of the credential-like environment variables of this process that are not weak
    (see ``is_weak_secret``), longest first: what ``redact_text`` masks wherever it stands as a
    whole token. A weak one is reported once by a warning naming its variable, never its
    value. ``fresh`` re-reads the whole environment."""
    _scan(fresh)
    return _EnvSecrets.values


def _scan(fresh: bool) -> None:
    environ = _RAW_ENVIRON
    size, users, now = len(environ), _user_sets(), time.monotonic()
    if (not fresh and size == _EnvSecrets.size and users is _EnvSecrets.version
            and now - _EnvSecrets.checked_at < ENV_RESCAN_S):
        for raw_key, raw_value in _EnvSecrets.watched:
            if environ.get(raw_key) != raw_value:
                break
        else:
            return
    found = [(name, value) for name, value in os.environ.items() if _is_secret_variable(name)]
    values = {v for _, v in found if not is_weak_secret(v)}
    # Values too short or setting words (``true``) are not worth a warning; words are.
    weak = sorted(name for name, v in found
                  if is_weak_secret(v) and len(v.strip()) >= MIN_ENV_SECRET_LEN
                  and v.strip().lower() not in _NOT_SECRET_VALUES
                  and name not in _EnvSecrets.warned)
    _EnvSecrets.watched = tuple((k, _raw_get(k)) for k in (_raw_key(n) for n, _ in found))
    _EnvSecrets.size, _EnvSecrets.version, _EnvSecrets.checked_at = size, users, now
    _EnvSecrets.values = tuple(sorted(values, key=len, reverse=True))
    _EnvSecrets.patterns = tuple((v, _whole_token(v)) for v in _EnvSecrets.values)
    if weak:
        # Marked before logging: the log pipeline redacts, and so comes back here.
        _EnvSecrets.warned.update(weak)
        _log.warning("llm-init: %s %s a weak secret (a plain word, a placeholder or a short "
                     "number), not masked in text, where masking would rewrite ordinary words",
                     ", ".join(weak), "holds" if len(weak) == 1 else "each hold")


def _is_secret_variable(name: str) -> bool:
    if not is_secret_key(name):
        return False
    if name.strip().lower() in _user_sets()[0]:
        return True
    words = _WORD_SPLIT.split(name)
    return not words or words[-1].lower() not in _SETTING_SEGMENTS


def _mask_query_param(match: re.Match[str]) -> str:
    if is_secret_key(match.group("name")):
        return f"{match.group('lead')}{match.group('name')}={MASK}"
    return match.group(0)


def _mask_pairs(text: str) -> str:
    out: list[str] = []
    pos = 0
    while (match := _PAIR.search(text, pos)) is not None:
        key = match.group("key")
        # A bare ``key`` is a credential as a structured name, but in prose ("unknown key:
        # 'x'") it names a dict key far more often than a secret.
        if key.lower() in _KEY_WORDS or not is_secret_key(key):
            # What looked like this pair's value may be the next pair (``Error: token=x``).
            out.append(text[pos:match.start("sep")])
            pos = match.start("sep")
            continue
        kq, sep, vq = match.group("kq"), match.group("sep"), match.group("vq") or ""
        out.append(f"{text[pos:match.start()]}{kq}{key}{kq}{sep}{vq}{MASK}{vq}")
        pos = match.end()
    out.append(text[pos:])
    return "".join(out)


def redact_text(text: str) -> str:
    """Mask credentials embedded in free text: ``user:pass@`` and secret query parameters in
    URLs, values of ``key=value`` / ``key: value`` pairs under credential-like keys, bearer
    credentials, known token shapes, and the values of credential-like environment variables."""
    _scan(False)
    for value, pattern in _EnvSecrets.patterns:
        if value in text:
            text = pattern.sub(MASK, text)
    return redact_identifier(text)


def redact_identifier(text: str) -> str:
    """Mask the credentials an identifier (a model id, a label, a path, a store URL) may carry
    in its own shape: URL user info, secret query parameters, ``key=value`` pairs under
    credential-like keys, bearer credentials and known token shapes. The values of environment
    variables are not searched for: a name that happens to contain one stays as it was given."""
    if "@" in text:
        text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{MASK}@", text)
    if "=" in text and ("?" in text or "&" in text or ";" in text):
        text = _QUERY_PARAM.sub(_mask_query_param, text)
    if ("=" in text or ":" in text) and _PAIR_HINT.search(text):
        text = _mask_pairs(text)
    if "hf_" in text or "AKIA" in text or "ASIA" in text:
        text = _TOKEN_SHAPES.sub(MASK, text)
    if "Bearer" in text:
        text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
    return text


def exception_message(exc: BaseException) -> str:
    """``Type: message`` (or just ``Type``) of an exception, redacted."""
    environment_secrets(fresh=True)  # a failure is rare: look at the environment as it is now
    text = str(exc)
    return redact_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


def exception_stacktrace(exc: BaseException) -> str:
    """The formatted traceback of an exception, redacted (it repeats the message)."""
    environment_secrets(fresh=True)
    return redact_text("".join(traceback.format_exception(exc)))
