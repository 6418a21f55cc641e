"""JSON-safe, redacted summaries of context values: what events record instead of live objects."""

from __future__ import annotations

import dataclasses
import enum
import math
import os
from collections.abc import Mapping
from typing import Any

from llm_init.telemetry.redaction import MASK, is_secret_key, redact_identifier, redact_text

JsonValue = Any  # None | bool | int | float | str | list[JsonValue] | dict[str, JsonValue]


def identifiers(labels: Mapping[str, Any]) -> dict[str, JsonValue]:
    """Labels as names: values under credential-like keys masked, the rest only structurally
    (``redact_identifier``), so that a label equal to some secret's value is kept as given."""
    return {redact_identifier(str(k)): json_safe(v, "labels") if not is_secret_key(str(k))
            else MASK for k, v in labels.items()}


_SCALARS = frozenset({bool, int, type(None)})
# JSON has no NaN or infinities; the log records them as these strings (JavaScript's spelling).
NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
# Values under these keys are names the user gave (the model, callbacks, paths): they keep
# their structural masking (URL user info) but are never rewritten by environment-value masking.
IDENTIFIER_KEYS = frozenset({
    "model_id", "model_source", "source", "callback_class", "callback_classes", "hook",
    "callback", "path", "local_path", "model_path", "download_dir", "cache_dir", "labels",
    "download_result", "model_link_dir", "cache_root", "store",
})


def finite_or_text(value: float) -> float | str:
    """``value`` if it is finite, else ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``."""
    return value if math.isfinite(value) else NON_FINITE[repr(float(value))]


def json_safe(value: Any, key: str | None = None) -> JsonValue:
    """A stable JSON-safe view of ``value``; values under credential-like keys are masked, and
    NaN and the infinities become the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``."""
    if key is not None and value is not None and is_secret_key(key):
        return MASK
    kind = type(value)
    # Exact-type checks first: this runs on every snapshot of every hook call.
    if kind is str:
        return redact_identifier(value) if key in IDENTIFIER_KEYS else redact_text(value)
    if kind in _SCALARS:
        return value
    if kind is float:
        return value if math.isfinite(value) else NON_FINITE[repr(value)]
    if kind is dict:
        return {redact_text(str(k)): json_safe(v, str(k)) for k, v in value.items()}
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
    if isinstance(value, float):  # a subclass: numpy.float64, say
        return finite_or_text(value)
    if isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return redact_identifier(value) if key in IDENTIFIER_KEYS else redact_text(value)
    if isinstance(value, Mapping):
        return {redact_text(str(k)): json_safe(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value, key=repr) if isinstance(value, set | frozenset) else value
        return [json_safe(v, key) for v in items]
    if isinstance(value, os.PathLike):
        return redact_identifier(str(os.fspath(value)))
    summarize = getattr(value, "__llm_init_summary__", None)
    if callable(summarize):
        return json_safe(summarize())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_safe(getattr(value, f.name), f.name)
                for f in dataclasses.fields(value) if not f.name.startswith("_")}
    pg = _placement_group_summary(value)
    if pg is not None:
        return pg
    # Anything else is a live object (an engine, a client): record what it is, never its state.
    cls = type(value)
    return {"type": f"{cls.__module__}.{cls.__qualname__}"}


def _placement_group_summary(value: Any) -> dict[str, JsonValue] | None:
    bundle_specs = getattr(value, "bundle_specs", None)
    pg_id = getattr(value, "id", None)
    if bundle_specs is None or pg_id is None:
        return None
    hex_id = pg_id.hex() if callable(getattr(pg_id, "hex", None)) else str(pg_id)
    return {"type": "PlacementGroup", "id": hex_id, "bundles": json_safe(list(bundle_specs))}
