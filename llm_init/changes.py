"""Change tracking: redacted snapshots of the context's recorded fields, and what changed."""

from __future__ import annotations

import enum
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llm_init.context import DICT_FIELDS, RECORDED_FIELDS, NodeInitializationContext
from llm_init.errors import ContextFieldError
from llm_init.summary import json_safe
from llm_init.telemetry.redaction import exception_message

_MISSING: Any = object()
_IMMUTABLE = frozenset({type(None), bool, int, float, str})
_CONTAINERS = frozenset({dict, list})


@dataclass(frozen=True, slots=True)
class Change:
    """One changed field, or one changed key of a dict field."""

    field: str
    key: str | None
    old: Any
    new: Any
    removed: bool = False


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Change]:
    """Field-level changes; dict fields are compared key by key."""
    changes: list[Change] = []
    for name in RECORDED_FIELDS:
        old, new = before[name], after[name]
        if old == new:
            continue
        if name in DICT_FIELDS and isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(old.keys() | new.keys()):
                o, n = old.get(key, _MISSING), new.get(key, _MISSING)
                if o != n:
                    changes.append(Change(name, key, None if o is _MISSING else o,
                                          None if n is _MISSING else n, removed=n is _MISSING))
        else:
            changes.append(Change(name, None, old, new))
    return changes


class Snapshots:
    """Redacted summaries of the context's recorded fields, taken after each hook or step.

    Summarizing every field after every call would cost more than the call, so a summary is
    reused while the field provably did not change: the same immutable object (``None``, a
    string, an enum member), or a dict or list still equal to its summary when that summary was
    a faithful copy (nothing masked or converted; the comparison runs in C). When no field
    changed, ``take`` returns the previous snapshot itself. The summary after one call is the
    "before" of the next, so whatever changes the context between two calls (a thread a hook
    left running) is still recorded, never lost.
    """

    def __init__(self, ctx: NodeInitializationContext) -> None:
        self.ctx = ctx
        self._get = operator.attrgetter(*RECORDED_FIELDS)
        self._values: tuple[Any, ...] = (_MISSING,) * len(RECORDED_FIELDS)
        self._summaries: list[Any] = [_MISSING] * len(RECORDED_FIELDS)
        self._compare: tuple[int, ...] = ()  # faithful containers: compare with the summary
        self._redo: tuple[int, ...] = ()  # anything else mutable: summarize again
        self.last: dict[str, Any] = {}
        self.last = self.take()

    def changes(self) -> list[Change]:
        """What changed since the last call (or since the snapshots began); a value that cannot
        be recorded raises ``ContextFieldError`` and leaves the last snapshot as it was."""
        before, after = self.last, self.take()
        if after is before:
            return []
        self.last = after
        return diff(before, after)

    def take(self) -> dict[str, Any]:
        values = self._get(self.ctx)
        summaries = self._summaries
        if (not self._redo and all(map(operator.is_, values, self._values))
                and all(values[i] == summaries[i] for i in self._compare)):
            return self.last
        compare, redo = [], []
        for i, value in enumerate(values):
            kind = type(value)
            same = self._values[i] is value
            if same and (kind in _IMMUTABLE or isinstance(value, enum.Enum)):
                continue
            if same and i in self._compare and value == summaries[i]:
                compare.append(i)
                continue
            try:
                summaries[i] = json_safe(value, RECORDED_FIELDS[i])
            except Exception as exc:  # a cycle, or a summary method that raised
                raise ContextFieldError(
                    f"ctx.{RECORDED_FIELDS[i]} holds a value that cannot be recorded: "
                    f"{exception_message(exc)}") from exc
            if kind in _CONTAINERS and _same_json(value, summaries[i]):
                compare.append(i)
            elif kind not in _IMMUTABLE and not isinstance(value, enum.Enum):
                redo.append(i)
        self._values, self._compare, self._redo = values, tuple(compare), tuple(redo)
        return dict(zip(RECORDED_FIELDS, summaries, strict=True))


def _same_json(value: Any, summary: Any) -> bool:
    """Whether ``summary`` is an exact copy of ``value`` (same types all the way down)."""
    kind = type(value)
    if kind is not type(summary):
        return False
    if kind is dict:
        return value.keys() == summary.keys() and all(
            _same_json(v, summary[k]) for k, v in value.items())
    if kind is list:
        return len(value) == len(summary) and all(
            _same_json(v, s) for v, s in zip(value, summary, strict=True))
    return kind in _IMMUTABLE and value == summary
