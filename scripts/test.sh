#!/usr/bin/env bash
# The project's checks: lint, strict typing, then the test suite (real Ray, vLLM on the CPU,
# SQLite, PostgreSQL and Prometheus servers that the tests start on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
export LLM_INIT_REQUIRE_PROMETHEUS=1 LLM_INIT_REQUIRE_POSTGRES=1
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
