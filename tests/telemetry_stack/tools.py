"""Paths of the stack's files and the Prometheus tools that check them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.prometheus import REQUIRE_ENV

ROOT = Path(__file__).resolve().parents[2]
TELEMETRY = ROOT / "telemetry"
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA_ENV = "COMPOSE_SPEC_SCHEMA"
SHARED_SCHEMA = ROOT.parent / "shared" / "schemas" / "compose-spec.json"
VENDORED_SCHEMA = ROOT / "tests" / "fixtures" / "compose-spec.json"


def compose_schema_path() -> Path:
    """``$COMPOSE_SPEC_SCHEMA``, else ``../shared/schemas/compose-spec.json`` beside the
    repository, else the copy vendored in ``tests/fixtures``."""
    if os.environ.get(SCHEMA_ENV):
        return Path(os.environ[SCHEMA_ENV])
    return SHARED_SCHEMA if SHARED_SCHEMA.exists() else VENDORED_SCHEMA


def tool(name: str, package: str) -> str:
    """The tool's path; skips without it, unless ``LLM_INIT_REQUIRE_PROMETHEUS`` is set."""
    found = shutil.which(name)
    if found is None:
        if os.environ.get(REQUIRE_ENV):
            pytest.fail(f"{name} is not installed and {REQUIRE_ENV} is set")
        pytest.skip(f"{name} is not installed (apt-get install {package})")
    return found


def run(*args: str, cwd: Path = TELEMETRY) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120,
                          check=False)
