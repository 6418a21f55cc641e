"""Two initializations side by side: where the time went differently, and what differed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from llm_init.events import Event, InitializationStarted, StepProgressed
from llm_init.replay import ReplayedInitialization, replay
from llm_init.summary import JsonValue
from llm_init.weight_transfers import by_phase, weight_transfers


@dataclass(frozen=True, slots=True)
class TimeDelta:
    """One row of the time comparison: the whole init, a phase, a default step or a hook."""

    kind: str  # init | phase | step | hook | subphase
    phase: str
    name: str
    a_s: float | None
    b_s: float | None

    @property
    def delta_s(self) -> float | None:
        return None if self.a_s is None or self.b_s is None else self.b_s - self.a_s


@dataclass(frozen=True, slots=True)
class ValueDelta:
    """One value that differs: ``section`` is run, warm_start, weights, labels, config or context;
    ``path`` is dotted into nested mappings; ``None`` on a side means absent there."""

    section: str
    path: str
    a: JsonValue
    b: JsonValue


@dataclass(slots=True)
class InitDiff:
    a: str
    b: str
    times: list[TimeDelta] = field(default_factory=list)
    values: list[ValueDelta] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b,
                "times": [{**asdict(t), "delta_s": t.delta_s} for t in self.times],
                "values": [asdict(v) for v in self.values]}


def diff_initializations(a: Sequence[Event], b: Sequence[Event]) -> InitDiff:
    """Compare two logs phase by phase, step by step and hook by hook (time), then their run
    facts, labels, config and final context (values)."""
    ra, rb = replay(a), replay(b)
    out = InitDiff(ra.init_id, rb.init_id)
    out.times.append(TimeDelta("init", "", "total", ra.duration_s, rb.duration_s))
    ta, tb = _durations(ra), _durations(rb)
    for key in list(ta) + [k for k in tb if k not in ta]:
        kind, phase, name = key
        out.times.append(TimeDelta(kind, phase, name, ta.get(key), tb.get(key)))
    # vLLM's start-up sub-phases (torch_compile, ...): where a warm start gave time back.
    sub_a, sub_b = _subphases(a), _subphases(b)
    for name in list(sub_a) + [n for n in sub_b if n not in sub_a]:
        out.times.append(TimeDelta("subphase", "engine_init", name, sub_a.get(name),
                                   sub_b.get(name)))
    sa, sb = _started(a), _started(b)
    sections: list[tuple[str, Mapping[str, Any], Mapping[str, Any]]] = [
        ("run", _run_facts(ra, sa), _run_facts(rb, sb)),
        # hit or miss, and whether vLLM then used what was restored (``used``, ``vllm.*``)
        ("warm_start", ra.warm_start, rb.warm_start),
        # bytes, seconds and bytes/s of the download and of the engine's own load
        ("weights", by_phase(weight_transfers(a)), by_phase(weight_transfers(b))),
        ("labels", ra.labels, rb.labels),
        ("config", sa.config if sa else {}, sb.config if sb else {}),
        ("context", ra.state, rb.state),
    ]
    for section, va, vb in sections:
        fa, fb = flatten(va), flatten(vb)
        for path in sorted(fa.keys() | fb.keys()):
            if fa.get(path, _ABSENT) != fb.get(path, _ABSENT):
                out.values.append(ValueDelta(section, path, fa.get(path), fb.get(path)))
    return out


_ABSENT: Any = object()


def _subphases(events: Sequence[Event]) -> dict[str, float]:
    """The engine step's reported sub-phases (the last report of each), in report order."""
    found: dict[str, float] = {}
    for e in events:
        if isinstance(e, StepProgressed) and e.step == "engine":
            name, seconds = e.details.get("subphase"), e.details.get("duration_s")
            if isinstance(name, str) and isinstance(seconds, int | float):
                found[name] = float(seconds)
    return found


def _started(events: Sequence[Event]) -> InitializationStarted | None:
    first = events[0] if events else None
    return first if isinstance(first, InitializationStarted) else None


def _run_facts(r: ReplayedInitialization, s: InitializationStarted | None) -> dict[str, Any]:
    return {"model_id": r.model_id, "outcome": r.outcome, "error": r.error,
            "host": s.host if s else None, "callbacks": list(s.callbacks) if s else None}


def _durations(r: ReplayedInitialization) -> dict[tuple[str, str, str], float | None]:
    """Seconds per (kind, phase, name) in timeline order; repeated entries add up."""
    out: dict[tuple[str, str, str], float | None] = {}
    for e in r.timeline:
        name = f"{e.actor}.{e.name}" if e.kind == "hook" and e.actor else e.name
        key = (e.kind, e.phase, name)
        before = out.get(key)
        if e.duration_s is None:
            out.setdefault(key, None)
        else:
            out[key] = e.duration_s + (before or 0.0)
    return out


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b.c": leaf}``; lists and empty mappings are leaves."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            out.update(flatten(item, path + "."))
        else:
            out[path] = item
    return out
