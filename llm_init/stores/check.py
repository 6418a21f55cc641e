"""``llm-init check``: is the store consistent, the log against its index?

``llm-init check``: is the store consistent? The log is the truth and the index a projection
of it, so where they disagree the log wins, and the disagreement is reported, never shown as
fact.

Per initialization it checks that the log can be read, that its sequence numbers run 1..N
without a gap, that every event decodes and that it starts with ``InitializationStarted``,
and that the index row records the outcome the replayed log ends in. For SQLite it also runs
``PRAGMA integrity_check`` on the file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from llm_init.errors import EventStoreError
from llm_init.events import Event
from llm_init.replay import ReplayedInitialization, replay
from llm_init.stores.base import CheckableStore, EventStore
from llm_init.stores.codec import StoredEvent, decode

# Outcomes the index never stores: readers derive them from a stored one (a stale "running"
# initialization read as "abandoned"), so they agree with that one.
_STORED_AS = {"abandoned": "running"}
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Problem:
    """One inconsistency: which init (``None`` for the store as a whole), what kind, and a
    one-line description."""

    init_id: str | None
    kind: str  # integrity | unreadable | gap | undecodable | no-start | index
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"init_id": self.init_id, "kind": self.kind, "message": self.message}


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What ``check_store`` found, and how many initializations it looked at."""

    checked: int
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_store(store: EventStore) -> CheckReport:
    """Every check, over every initialization in the log or the index."""
    problems = [Problem(None, "integrity", line) for line in _integrity(store)]
    if isinstance(store, CheckableStore):
        # Each listing on its own: with the events table damaged, the index still names the
        # inits to look at, and the other way round.
        no_rows: dict[str, str] = {}
        no_ids: list[str] = []
        index = _listed(store.index_outcomes, no_rows, "the index", problems)
        logged = _listed(store.event_init_ids, no_ids, "the list of logged inits", problems)
        ids = sorted(set(logged) | set(index))
    else:  # no index to compare with: the logs are still checked
        index, ids = {}, sorted(store.list_init_ids(10**9))
    for init_id in ids:
        problems.extend(check_initialization(store, init_id, index.get(init_id),
                                             indexed=isinstance(store, CheckableStore)))
    return CheckReport(len(ids), problems)


def check_initialization(store: EventStore, init_id: str, index_outcome: str | None, *,
                         indexed: bool = True) -> list[Problem]:
    """The problems of one initialization's log, and of its index row against it."""
    try:
        records = store.read(init_id)
    except EventStoreError as exc:
        return [Problem(init_id, "unreadable", f"{init_id}: {exc}")]
    if not records:
        return [Problem(init_id, "index", f"{init_id}: the index has a row "
                                          f"({index_outcome}) but the log has no events")]
    problems = list(_gaps(init_id, records))
    events = list(_decoded(init_id, records, problems))
    if not events or events[0].TYPE != "InitializationStarted" or events[0].sequence != 1:
        problems.append(Problem(init_id, "no-start", f"{init_id}: the log does not start "
                                                     "with InitializationStarted"))
        return problems
    replayed = replay(events)
    found = disagreement(replayed, index_outcome) if indexed else None
    if found is not None:
        problems.append(Problem(init_id, "index", found))
    return problems


def disagreement(replayed: ReplayedInitialization, index_outcome: str | None) -> str | None:
    """A line saying how the index row differs from the replayed log, or ``None``."""
    if index_outcome is None:
        return (f"{replayed.init_id}: the log says {replayed.outcome} but the index has no "
                "row for it")
    if index_outcome in (replayed.outcome, _STORED_AS.get(replayed.outcome)):
        return None
    return (f"{replayed.init_id}: the index says {index_outcome} but the log says "
            f"{replayed.outcome} (last event #{replayed.last_sequence})")


def index_disagreement(store: EventStore, replayed: ReplayedInitialization) -> str | None:
    """How the store's index row of ``replayed`` differs from it, for a warning beside what
    the log shows; ``None`` when they agree or the store has no index to ask."""
    if not isinstance(store, CheckableStore):
        return None
    try:
        found = store.index_outcomes([replayed.init_id])
    except EventStoreError:
        return None  # the view goes on from the log; ``llm-init check`` reports the store
    return disagreement(replayed, found.get(replayed.init_id))


def _listed(read: Callable[[], T], empty: T, what: str, problems: list[Problem]) -> T:
    try:
        return read()
    except EventStoreError as exc:
        problems.append(Problem(None, "unreadable", f"{what} cannot be read: {exc}"))
        return empty


def _integrity(store: EventStore) -> list[str]:
    inner = getattr(store, "inner", store)  # a buffered store checks what it wraps
    check = getattr(inner, "integrity_problems", None)
    return list(check()) if callable(check) else []


def _gaps(init_id: str, records: list[StoredEvent]) -> Iterable[Problem]:
    expected = 1
    for r in records:
        if r.sequence > expected:
            missing = (f"event #{expected} is" if r.sequence == expected + 1
                       else f"events #{expected}..#{r.sequence - 1} are")
            yield Problem(init_id, "gap", f"{init_id}: {missing} missing (the log goes on "
                                          f"at #{r.sequence})")
        expected = r.sequence + 1


def _decoded(init_id: str, records: list[StoredEvent], problems: list[Problem]
             ) -> Iterable[Event]:
    for r in records:
        try:
            yield decode(r)
        except EventStoreError as exc:
            problems.append(Problem(init_id, "undecodable", str(exc)))
