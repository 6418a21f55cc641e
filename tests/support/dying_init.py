"""A process that runs ``initialize_node`` into a SQLite store and hangs in one phase, for
tests that kill it with SIGKILL; or, with ``-``, one that runs a whole quick initialization.

``python -m tests.support.dying_init STORE INIT_ID PHASE MARKER``: the hook or step of PHASE
writes MARKER, then blocks the event loop (``time.sleep``, as engine construction does) until
the process is killed. PHASE ``-`` blocks nowhere and exits when the initialization is done.
The heartbeat interval comes from ``LLM_INIT_HEARTBEAT_INTERVAL_S``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from llm_init import LLMConfig, NodeInitializationContext, initialize_node_sync
from llm_init.stores import SQLiteEventStore
from tests.support.steps import CallingStep, local_steps

STEP_PHASES = {"download": "download", "placement_group": "placement_group",
               "engine_init": "engine"}
HOOK_PHASES = {"pre_initialization": "on_pre_initialization",
               "post_initialization": "on_post_initialization"}


def hang(marker: str) -> None:
    Path(marker).write_text("hanging")
    while True:
        time.sleep(60)


class HangingCallback:
    """Hangs in one hook (``hook``), after writing ``marker``."""

    def __init__(self, hook: str = "", marker: str = "") -> None:
        self.hook, self.marker = hook, marker

    def on_pre_initialization(self, ctx: NodeInitializationContext) -> None:
        if self.hook == "on_pre_initialization":
            hang(self.marker)

    def on_post_initialization(self, ctx: NodeInitializationContext) -> None:
        if self.hook == "on_post_initialization":
            hang(self.marker)


def main(store_path: str, init_id: str, phase: str, marker: str) -> None:
    overrides: dict[str, Any] = {}
    if phase in STEP_PHASES:
        overrides[STEP_PHASES[phase]] = CallingStep(lambda ctx: hang(marker))
    config = LLMConfig(model_id="dying-model", callback_class=HangingCallback,
                       callback_kwargs={"hook": HOOK_PHASES.get(phase, ""), "marker": marker})
    store = SQLiteEventStore(store_path)
    initialize_node_sync(config, event_store=store, steps=local_steps(**overrides),
                         init_id=init_id)
    store.close()


if __name__ == "__main__":
    main(*sys.argv[1:5])
