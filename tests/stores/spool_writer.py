"""Run as a process: spool one init's events for a stopped database, then wait to be killed."""

from __future__ import annotations

import sys
import time

from llm_init.stores import open_store
from tests.support.logs import records, synthetic_log


def main() -> None:
    store = open_store(sys.argv[1])
    for record in records(synthetic_log("killed")):
        store.append([record])
    print("spooled", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
