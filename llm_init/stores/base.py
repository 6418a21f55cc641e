"""The store protocols: what every event store does, and the optional methods some add."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from llm_init.events import Event
from llm_init.stores.codec import StoredEvent, decode, decode_rows, encode, unencodable_field

# The codec's names stay importable from here, where they lived before it had a module of its own.
__all__ = [
    "OUTCOMES",
    "ChangeFeed",
    "CheckableStore",
    "DecodingStore",
    "EventStore",
    "InitQuery",
    "Outcome",
    "PrefixSearchStore",
    "QueryableStore",
    "StoredEvent",
    "WatchableStore",
    "decode",
    "decode_rows",
    "encode",
    "unencodable_field",
]


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


@runtime_checkable
class WatchableStore(Protocol):
    """Optional store method for live following."""

    def watch(self) -> ChangeFeed:
        """A feed that wakes up when any process appends to this store."""
