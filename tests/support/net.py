"""Loopback ports for tests: a free one to serve on, and a closed one nothing answers on."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A port where connections are refused: bound once, then released, with nobody listening."""
    return free_port()
