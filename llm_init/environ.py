"""Process environment variables set for one block and put back after it."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping


@contextlib.contextmanager
def environment(values: Mapping[str, str], *, also_restore: Iterable[str] = ()
                ) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the block; afterwards every variable it set, and
    those named in ``also_restore`` (ones code inside may set), is as it was before."""
    saved = {name: os.environ.get(name) for name in {*values, *also_restore}}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
