"""Run as a process: initialize N times (or forever) into one SQLite event store."""

from __future__ import annotations

import sys

from llm_init import LLMConfig, SQLiteEventStore, initialize_node_sync
from tests.support.callbacks import Busy
from tests.support.steps import setting_steps


def main() -> None:
    path, count = sys.argv[1], int(sys.argv[2])
    store = SQLiteEventStore(path)
    config = LLMConfig(model_id="writer", callback_class=Busy)
    done = 0
    while count < 0 or done < count:
        initialize_node_sync(config, event_store=store, steps=setting_steps())
        done += 1
        if done == 1:
            print("first-done", flush=True)


if __name__ == "__main__":
    main()
