"""Run as a process: one concurrent writer of the store contract; prints its shared wins."""

from __future__ import annotations

import sys

from llm_init.stores import open_store
from tests.stores.workload import write_workload


def main() -> None:
    store = open_store(sys.argv[1], buffered=False)
    try:
        print(write_workload(store, int(sys.argv[2])))
    finally:
        store.close()


if __name__ == "__main__":
    main()
