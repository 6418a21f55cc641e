"""The stored form of events, the store protocol, and the one mapper between events and records."""

from __future__ import annotations

import dataclasses
import json
import operator
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

try:
    import msgspec as _msgspec  # optional: decodes JSON straight into the event classes
except ImportError:  # pragma: no cover - the standard-library path gives the same events
    _msgspec = None  # type: ignore[assignment]

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


class EventStore(Protocol):
    """An append-only log of stored events, keyed by (init_id, sequence)."""

    def append(self, records: Sequence[StoredEvent]) -> None:
        """Append all records in one transaction; a taken (init_id, sequence) raises
        ``DuplicateEventError`` and appends nothing."""

    def read(self, init_id: str, *, after: int = 0, upto: int | None = None) -> list[StoredEvent]:
        """The records of one initialization with ``after < sequence <= upto``, in order."""

    def list_init_ids(self, limit: int = 50) -> list[str]:
        """Ids of the latest-started initializations, newest first."""

    def close(self) -> None:
        """Release connections and files."""


Outcome = Literal["running", "completed", "failed", "abandoned"]
OUTCOMES: tuple[Outcome, ...] = ("running", "completed", "failed", "abandoned")


@dataclass(frozen=True, slots=True, kw_only=True)
class InitQuery:
    """Which initializations a fleet query means: every field set must match, ``None`` is any.

    ``since``/``until`` bound the start time; ``labels`` are (key, value) pairs that must all be
    among the init's labels; ``order`` is ``newest`` (start time, newest first) or ``slowest``
    (recorded duration, longest first, running ones last); ``limit=None`` means all.
    ``now`` is the time liveness is judged at (default: when the query runs): an unfinished
    init silent past its heartbeat bound then is ``abandoned``, not ``running``.
    """

    model_id: str | None = None
    outcome: Outcome | None = None
    since: datetime | None = None
    until: datetime | None = None
    host: str | None = None
    node_id: str | None = None
    application: str | None = None
    deployment: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    order: Literal["newest", "slowest"] = "newest"
    limit: int | None = 50
    now: datetime | None = None


@runtime_checkable
class QueryableStore(Protocol):
    """Optional store methods that answer fleet queries without replaying every log; the fleet
    module falls back to replaying when a store lacks them."""

    def query_initializations(self, query: InitQuery) -> list[str]:
        """Ids of the initializations matching ``query``, in its order, at most its limit."""

    def query_durations(self, query: InitQuery) -> list[tuple[str, float]]:
        """``(phase, seconds)`` of every ``PhaseCompleted`` and ``("total", seconds)`` of every
        ``InitializationCompleted`` of the matching inits (order and limit are ignored)."""


class ChangeFeed(Protocol):
    """A subscription to a store's appends, opened before the first read so none is missed."""

    def wait(self, timeout: float) -> bool:
        """Block until something was appended since the last call (``True``) or ``timeout``
        seconds passed (``False``)."""

    def close(self) -> None:
        """Stop listening."""


@runtime_checkable
class DecodingStore(Protocol):
    """Optional store method for replay's hot path: rows decoded straight into events, without
    the ``StoredEvent`` records in between (building those costs as much as fetching the rows)."""

    def read_decoded(self, init_id: str) -> list[Event]:
        """The decoded events of one initialization, in order: ``[decode(r) for r in
        read(init_id)]``, and the same errors."""


@runtime_checkable
class PrefixSearchStore(Protocol):
    """Optional store method that resolves a shortened init id with one indexed range query,
    whatever the number of initializations."""

    def find_init_ids(self, prefix: str, limit: int = 2) -> list[str]:
        """Ids starting with ``prefix``, in id order, at most ``limit``."""


@runtime_checkable
class CheckableStore(Protocol):
    """Optional store methods that let ``llm-init check`` compare the per-initialization index
    with the log it is derived from."""

    def index_outcomes(self, init_ids: Sequence[str] | None = None) -> dict[str, str]:
        """The outcome the index row of each of ``init_ids`` (``None``: every row) records;
        ids without a row are left out."""

    def event_init_ids(self) -> list[str]:
        """Every init id that has at least one event, in id order."""


def prefix_upper(prefix: str) -> str | None:
    """The least string above every string starting with ``prefix`` (code point order, which
    is SQLite's and PostgreSQL's "C" order of UTF-8 text); ``None`` when there is none."""
    while prefix and prefix[-1] == chr(0x10FFFF):
        prefix = prefix[:-1]
    if not prefix:
        return None
    last = ord(prefix[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # surrogates cannot be encoded: skip to the next scalar
        last = 0xE000
    return prefix[:-1] + chr(last)


@runtime_checkable
class WatchableStore(Protocol):
    """Optional store method for live following."""

    def watch(self) -> ChangeFeed:
        """A feed that wakes up when any process appends to this store."""


# One encoder for every event (``json.dumps`` with options builds a new one per call). Event
# bodies are trees of JSON values, so the circular-reference check is not needed.
_ENCODER = json.JSONEncoder(separators=(",", ":"), sort_keys=True, allow_nan=False,
                            check_circular=False)
_BODY_HEADER = ("trace_id", "span_id", "node_id")  # header fields stored in the body
_BODY_FIELDS: dict[type[Event], tuple[tuple[str, ...], operator.attrgetter[Any]]] = {}


def encode(event: Event) -> StoredEvent:
    """The stored form of ``event``. NaN and the infinities, wherever they are in its fields,
    are stored as ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (JSON has no such numbers); any
    other value JSON cannot hold raises ``ValueError`` or ``TypeError``."""
    cls = type(event)
    found = _BODY_FIELDS.get(cls)
    if found is None:
        names = (*payload_names(cls), *_BODY_HEADER)
        found = _BODY_FIELDS[cls] = (names, operator.attrgetter(*names))
    names, values = found
    body = dict(zip(names, values(event), strict=True))
    try:
        state = _ENCODER.encode(body)
    except ValueError:  # the encoder refuses non-finite floats: only then look for them
        state = _ENCODER.encode(_finite(body))
    return StoredEvent(
        event.init_id,
        event.sequence,
        event.TYPE,
        event.SCHEMA_VERSION,
        event.timestamp.isoformat(timespec="microseconds"),
        state,
    )


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
    cls = EVENT_TYPES.get(record.topic)
    if cls is None:
        raise EventStoreError(
            f"event {record.init_id}#{record.sequence} has unknown type {record.topic!r}"
        )
    if record.schema_version > cls.SCHEMA_VERSION:
        raise EventStoreError(
            f"event {record.init_id}#{record.sequence} ({record.topic}) has schema version "
            f"{record.schema_version}, newer than this llm-init understands ({cls.SCHEMA_VERSION})"
        )
    if _msgspec is not None:
        text = _with_header(record)
        if text is not None:
            try:
                event: Event = (_TYPED.get(cls) or _typed(cls)).decode(text)
                return event
            except _msgspec.MsgspecError:
                pass  # the general path below decides, and words the error
    build = _BUILDERS.get(cls) or _builder(cls)
    try:
        return build(record.init_id, record.sequence, datetime.fromisoformat(record.timestamp),
                     json.loads(record.state))
    except (ValueError, TypeError, KeyError) as exc:
        raise EventStoreError(
            f"event {record.init_id}#{record.sequence} ({record.topic}) cannot be decoded: "
            f"{exc!r}"
        ) from exc


def decode_rows(init_id: str, rows: Iterable[Sequence[Any]]) -> list[Event]:
    """The events of one initialization from its rows ``(sequence, topic, schema_version,
    timestamp, state)``: what ``decode`` gives for each, without building the records.

    Rows in the shape the encoder writes go straight to msgspec, with the header spliced in
    from a prefix made once per initialization; any other row takes ``decode``, which decides
    and words the error.
    """
    if _msgspec is None:
        return [decode(StoredEvent(init_id, *row)) for row in rows]
    head = f'{{"init_id":{_json_text(init_id)},"sequence":'
    decoders = _ROW_DECODERS or _row_decoders()
    events: list[Event] = []
    append = events.append
    for sequence, topic, version, timestamp, state in rows:
        found = decoders.get(topic)
        try:
            # A quote or backslash in the time would end or bend its string in the spliced
            # text; such rows (never the encoder's) take decode. A control character, or an
            # empty or broken body, makes the text invalid JSON, and so takes decode too.
            if (found is not None and version <= found[0] and state[:1] == "{"
                    and '"' not in timestamp and "\\" not in timestamp):
                append(found[1](f'{head}{sequence:d},"timestamp":"{timestamp}",{state[1:]}'))
                continue
        except (_msgspec.MsgspecError, ValueError, TypeError):
            pass  # a row of another shape or type: decode gives the same event or the error
        append(decode(StoredEvent(init_id, sequence, topic, version, timestamp, state)))
    return events


def _row_decoders() -> dict[str, tuple[int, Callable[[str], Event]]]:
    """Per topic: the newest schema version understood, and the typed decoder's ``decode``."""
    for topic, cls in EVENT_TYPES.items():
        _ROW_DECODERS[topic] = (cls.SCHEMA_VERSION, (_TYPED.get(cls) or _typed(cls)).decode)
    return _ROW_DECODERS


_ROW_DECODERS: dict[str, tuple[int, Callable[[str], Event]]] = {}


def _typed(cls: type[Event]) -> Any:
    decoder = _TYPED[cls] = _msgspec.json.Decoder(cls)
    return decoder


def _with_header(record: StoredEvent) -> str | None:
    """The body with the header fields spliced in front, so msgspec builds the whole event
    (about three times faster than parsing to a dict and constructing)."""
    rest = record.state
    if rest[:1] != "{":
        rest = rest.lstrip()
        if rest[:1] != "{":
            return None
    rest = rest[1:]
    if rest[:1] != '"':  # not the usual first key: an empty or oddly spaced body
        rest = rest.lstrip()
    return (f'{{"init_id":{_json_text(record.init_id)},"sequence":{int(record.sequence)},'
            f'"timestamp":{_json_text(record.timestamp)}{"" if rest[:1] == "}" else ","}'
            f"{rest}")


def _json_text(value: str) -> str:
    """``value`` as a JSON string; ids and ISO times need no escaping, anything else gets it."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return f'"{value}"'
    return json.dumps(value)


_TYPED: dict[type[Event], Any] = {}


_Builder = Callable[[str, int, datetime, dict[str, Any]], Event]


def _builder(cls: type[Event]) -> _Builder:
    """A constructor for ``cls`` from a decoded body, about twice as fast as ``cls(**body)``:
    it sets the slots directly (as the frozen dataclass's own ``__init__`` does), turns JSON
    lists back into tuples where the field is a tuple, fills defaulted fields an older writer
    left out, and ignores fields ``cls`` does not have."""
    hints = typing.get_type_hints(cls)
    header = ("init_id", "sequence", "timestamp")
    fields = [f for f in dataclasses.fields(cls) if f.name not in header]
    names = tuple(f.name for f in fields)
    setters = tuple(getattr(cls, name).__set__ for name in names)
    tuples = tuple((f.name, getattr(cls, f.name).__set__) for f in fields
                   if typing.get_origin(hints[f.name]) is tuple)
    defaults = {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}
    known = frozenset(names)
    get_all = operator.itemgetter(*names)
    set_id, set_seq, set_time = (getattr(cls, name).__set__ for name in header)
    new = object.__new__

    def build(init_id: str, sequence: int, timestamp: datetime, body: dict[str, Any]) -> Event:
        if len(body) != len(names) or not known.issuperset(body):
            body = {**defaults, **{k: v for k, v in body.items() if k in known}}
        values = get_all(body) if len(names) > 1 else (get_all(body),)
        event: Event = new(cls)
        set_id(event, init_id)
        set_seq(event, sequence)
        set_time(event, timestamp)
        for set_field, value in zip(setters, values, strict=True):
            set_field(event, value)
        for name, set_field in tuples:
            if type(body[name]) is list:
                set_field(event, tuple(body[name]))
        return event

    _BUILDERS[cls] = build
    return build


_REQUIRED: Any = object()
_BUILDERS: dict[type[Event], _Builder] = {}
