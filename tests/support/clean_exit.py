"""The test process ends with pytest's status, not a crash in Ray's native teardown.

See ``llm_init.ray_exit``: the suite starts Ray dozens of times in one process, after which
Ray's metric exporter thread can crash the process at exit (status 139) once every test passed.
"""

from __future__ import annotations

import pytest

from llm_init.ray_exit import exit_process

_STATUS = pytest.StashKey[int]()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    status = config.stash.get(_STATUS, None)
    if status is not None:
        exit_process(status)
