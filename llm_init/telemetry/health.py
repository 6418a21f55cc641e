"""One clear warning per telemetry outage: exporters and servers report here, never raise.

Telemetry must not fail an initialization, and must not drown its logs either: the first problem
of a kind (``"traces"``, ``"metrics"``, ...) is logged as one warning, repeats are logged at debug
level, and a success of that kind re-arms the warning for the next outage.
"""

from __future__ import annotations

import logging
import threading

from llm_init.telemetry.names import LOGGER_TELEMETRY
from llm_init.telemetry.redaction import redact_text

log = logging.getLogger(LOGGER_TELEMETRY)
_lock = threading.Lock()
_failing: set[str] = set()


def failed(kind: str, message: str) -> bool:
    """Report a telemetry failure; logs a warning only if ``kind`` was healthy until now.
    Returns whether this call logged the warning."""
    message = redact_text(message)
    with _lock:
        first = kind not in _failing
        _failing.add(kind)
    if first:
        log.warning("%s", message)
    else:
        log.debug("%s (repeated)", message)
    return first


def recovered(kind: str) -> None:
    """Report a success: the next failure of ``kind`` warns again."""
    if kind in _failing:  # racy read on purpose: the common path takes no lock
        with _lock:
            was = kind in _failing
            _failing.discard(kind)
        if was:
            log.info("%s telemetry works again", kind)
