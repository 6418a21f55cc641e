"""Ending a process that ran a Ray driver, without the crash Ray's metric exporter can cause.

Ray 2.60's driver keeps an OpenTelemetry metric exporter thread in its native library. From the
second ``ray.init`` in a process on, ``ray.shutdown`` leaves that thread running: every export
interval it fails to reach the (gone) metrics agent and logs a warning. When the process exits,
C's ``exit`` runs the native libraries' static destructors, spdlog's logger registry among them,
while that thread may still be logging; the log call then reads freed memory and the process
dies of SIGSEGV (status 139) after everything it did succeeded. A core of the test suite's
process showed exactly that: the exporter's thread in ``spdlog::details::registry::
initialize_logger`` under ``OpenTelemetryMetricExporter::Export``, the main thread in ``exit``
running torch's static destructors. Ray offers no call that stops the thread, so a process that
started Ray more than once ends here: Python's own exit handlers run as at a normal exit, then
the process ends without the native teardown (``os._exit``), which it does not need.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
from typing import NoReturn


def ray_was_loaded() -> bool:
    """Whether Ray's native library is in this process (its exporter thread may be running)."""
    return "ray._raylet" in sys.modules


def exit_process(status: int) -> NoReturn:
    """End the process with ``status``. Python's exit handlers (``atexit``, logging's flush)
    run first; where Ray's native library was loaded, the native teardown that can crash is
    skipped, elsewhere this is ``sys.exit``."""
    if not ray_was_loaded():
        sys.exit(status)
    # CPython's own finalization calls this too; atexit offers no public way to run them early.
    atexit._run_exitfuncs()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(status)
