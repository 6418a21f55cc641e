"""The concurrent-writer workload of the store contract, light enough to start fast."""

from __future__ import annotations

from llm_init.errors import DuplicateEventError
from llm_init.stores import EventStore
from tests.support.logs import records, synthetic_log


def write_workload(store: EventStore, writer: int) -> int:
    """One writer's share: ten inits of its own in batches of five, and a race with every
    other writer for each event of the shared init. Returns how many shared events it won."""
    for k in range(10):
        log = records(synthetic_log(f"w{writer}-{k}"))
        for start in range(0, len(log), 5):
            store.append(log[start:start + 5])
    won = 0
    for record in records(synthetic_log("shared")):
        try:
            store.append([record])
            won += 1
        except DuplicateEventError:
            pass
    return won
