"""The one mapper between events and their stored records: encode, and decode via msgspec."""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any

import msgspec

from llm_init.errors import EventStoreError
from llm_init.events import EVENT_TYPES, Event, payload_names
from llm_init.summary import finite_or_text


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as a store keeps it: key, type name, schema version, time, and a JSON body."""

    init_id: str
    sequence: int
    topic: str
    schema_version: int
    timestamp: str
    state: str


# One encoder for every event (``json.dumps`` with options builds a new one per call). Event
# bodies are trees of JSON values, so the circular-reference check is not needed.
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, allow_nan=False,
                            check_circular=False)
_BODY_HEADER = ("trace_id", "span_id", "node_id")  # header fields stored in the body
# Per event type: its body's field names in sorted order, each as the JSON text '"name":', and
# a getter of their values in that order.
_BODY_FIELDS: dict[type[Event], tuple[tuple[str, ...], tuple[str, ...],
                                      operator.attrgetter[Any]]] = {}
_UTC_TEXT = msgspec.json.Encoder().encode  # RFC 3339, "...T08:01:48.123456Z" in UTC


def encode(event: Event) -> StoredEvent:
    """The stored form of ``event``. NaN and the infinities, wherever they are in its fields,
    are stored as ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (JSON has no such numbers); any
    other value JSON cannot hold raises ``ValueError`` or ``TypeError``."""
    cls = type(event)
    found = _BODY_FIELDS.get(cls)
    if found is None:
        names = tuple(sorted((*payload_names(cls), *_BODY_HEADER)))
        found = _BODY_FIELDS[cls] = (names, tuple(f"{encode_basestring_ascii(n)}:" for n in names),
                                     operator.attrgetter(*names))
    names, keys, values = found
    try:
        state = _body_text(keys, values(event))
    except ValueError:  # the encoder refuses non-finite floats: only then look for them
        state = _ENCODER.encode(_finite(dict(zip(names, values(event), strict=True))))
    return StoredEvent(
        event.init_id,
        event.sequence,
        event.TYPE,
        event.SCHEMA_VERSION,
        _timestamp_text(event.timestamp),
        state,
    )


def _body_text(keys: tuple[str, ...], values: tuple[Any, ...]) -> str:
    """What ``_ENCODER`` makes of the body ``dict(zip(names, values))``, the same text to the
    byte (``keys`` are its sorted names, encoded): the flat values most fields hold are written
    here, anything else by ``_ENCODER`` itself: half the cost of encoding the body as one dict,
    which was an event's largest cost on the way to the store."""
    parts = []
    for key, value in zip(keys, values, strict=True):
        kind = type(value)
        if kind is str:
            parts.append(key + encode_basestring_ascii(value))
        elif value is None:
            parts.append(key + "null")
        elif value is True:
            parts.append(key + "true")
        elif value is False:
            parts.append(key + "false")
        elif kind is float and math.isfinite(value):
            parts.append(key + float.__repr__(value))
        elif kind is tuple and not value:
            parts.append(key + "[]")
        else:
            parts.append(key + _ENCODER.encode(value))
    return "{" + ",".join(parts) + "}"


def _timestamp_text(timestamp: datetime) -> str:
    """``timestamp.isoformat(timespec="microseconds")``, five times faster for the UTC times the
    recorder stamps (msgspec writes them with six fraction digits, or none on the second)."""
    if timestamp.microsecond and timestamp.tzinfo is UTC and type(timestamp) is datetime:
        text = _UTC_TEXT(timestamp)[1:-2].decode()
        if len(text) == 26:
            return text + "+00:00"
    return timestamp.isoformat(timespec="microseconds")


def unencodable_field(event: Event) -> str | None:
    """The first field of ``event`` that ``encode`` cannot store, if one is to blame."""
    for name in (*payload_names(type(event)), *_BODY_HEADER):
        try:
            _ENCODER.encode(_finite(getattr(event, name)))
        except (ValueError, TypeError, RecursionError):
            return name
    return None


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by its JSON-safe text."""
    if isinstance(value, float):
        return finite_or_text(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def decode(record: StoredEvent) -> Event:
    """The event a record stores. Fields the event type lacks are ignored (a tolerant
    reader); missing fields take their defaults, and a missing required one is an error."""
    row = (record.sequence, record.topic, record.schema_version, record.timestamp, record.state)
    return decode_rows(record.init_id, (row,))[0]


def decode_rows(init_id: str, rows: Iterable[Sequence[Any]]) -> list[Event]:
    """The events of one initialization from its rows ``(sequence, topic, schema_version,
    timestamp, state)``: what ``decode`` gives for each, without building the records.

    Each row's header is spliced in front of its body, so msgspec builds the whole event from
    one text (about three times faster than parsing to a dict and constructing).
    """
    head = f'{{"init_id":{_json_text(init_id)},"sequence":'
    decoders = _DECODERS
    events: list[Event] = []
    append = events.append
    for sequence, topic, version, timestamp, state in rows:
        found = decoders.get(topic) or _decoder(init_id, sequence, topic)
        if version > found[0]:
            raise EventStoreError(
                f"event {init_id}#{sequence} ({topic}) has schema version {version}, newer "
                f"than this llm-init understands ({found[0]})"
            )
        rest = state[1:] if state[:2] == '{"' else _rest(init_id, sequence, topic, state)
        if '"' in timestamp or "\\" in timestamp:  # would end or bend its string: escape
            timestamp = json.dumps(timestamp)[1:-1]
        try:
            append(found[1](f'{head}{sequence:d},"timestamp":"{timestamp}",{rest}'))
        except msgspec.MsgspecError as exc:
            raise EventStoreError(
                f"event {init_id}#{sequence} ({topic}) cannot be decoded: {exc}"
            ) from exc
    return events


def _rest(init_id: str, sequence: int, topic: str, state: str) -> str:
    """What follows the header in the spliced text for a body of another shape than the
    encoder's (spaced, or empty)."""
    rest = state.lstrip()
    if rest[:1] != "{":
        raise EventStoreError(
            f"event {init_id}#{sequence} ({topic}) cannot be decoded: its body is not a JSON "
            "object"
        )
    rest = rest[1:].lstrip()
    # The header ends with a comma, so an empty body closes with a placeholder key, which
    # the event types lack and so ignore.
    return '"":null}' if rest[:1] == "}" else rest


def _decoder(init_id: str, sequence: int, topic: str) -> tuple[int, Callable[[str], Event]]:
    """The newest schema version of ``topic`` this llm-init understands, and its typed decoder.

    Not strict, so a float field the encoder stored as ``"NaN"`` or ``"Infinity"`` reads back
    as that float; unknown fields are ignored and left-out defaulted ones filled.
    """
    cls = EVENT_TYPES.get(topic)
    if cls is None:
        raise EventStoreError(f"event {init_id}#{sequence} has unknown type {topic!r}")
    found = _DECODERS[topic] = (cls.SCHEMA_VERSION, msgspec.json.Decoder(cls, strict=False).decode)
    return found


_DECODERS: dict[str, tuple[int, Callable[[str], Event]]] = {}


def _json_text(value: str) -> str:
    """``value`` as a JSON string; ids and ISO times need no escaping, anything else gets it."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value)
