"""Appends the next event to a log from outside an initialization's run, retrying on conflict.

The one way writers outside an initialization's run (readiness, the publish after start-up,
the abandonment sweep) append to its log: after its last event, retrying only when another
writer took that sequence number first."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llm_init.errors import DuplicateEventError, UnknownInitializationError
from llm_init.events import Event
from llm_init.stores.base import EventStore
from llm_init.stores.codec import decode, encode

APPEND_ATTEMPTS = 5


def append_next(store: EventStore, init_id: str,
                build: Callable[[Sequence[Event], int], Event | None], *,
                attempts: int = APPEND_ATTEMPTS) -> Event | None:
    """Append ``build(events, sequence)``: the event made from ``init_id``'s log ``events``
    and the sequence number after its last one; ``None`` when ``build`` returns ``None``
    (nothing is appended). A sequence conflict (``DuplicateEventError``: another writer
    appended first) reads the log again and rebuilds, up to ``attempts`` times, then raises;
    any other error raises at once."""
    for attempt in range(attempts):
        events = [decode(r) for r in store.read(init_id)]
        if not events:
            raise UnknownInitializationError(f"no initialization {init_id!r} in the event store")
        event = build(events, events[-1].sequence + 1)
        if event is None:
            return None
        try:
            store.append([encode(event)])
        except DuplicateEventError:
            if attempt == attempts - 1:
                raise
            continue
        return event
    raise ValueError(f"append_next needs attempts >= 1, got {attempts}")
