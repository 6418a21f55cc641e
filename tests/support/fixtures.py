"""pytest fixtures over the support modules; import the ones a test module uses by name."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.s3 import MotoS3


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[MotoS3]:
    """A loopback S3 server for the test module (fake credentials set in the environment)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in MotoS3.ENV.items():
            patch.setenv(name, value)
        for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
            patch.delenv(name, raising=False)
        with MotoS3() as server:
            yield server
