#!/usr/bin/env bash
# The project's checks: lint, strict typing, then the test suite (real Ray, vLLM on the CPU,
# SQLite, PostgreSQL and Prometheus servers that the tests start on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
export LLM_INIT_REQUIRE_PROMETHEUS=1 LLM_INIT_REQUIRE_POSTGRES=1
# A native crash prints every thread's Python stack, and leaves a core for gdb where allowed.
export PYTHONFAULTHANDLER=1
ulimit -c unlimited 2>/dev/null || true
.venv/bin/ruff check .
.venv/bin/mypy
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -gt 128 ]; then
    core=$(ls -t core core.* 2>/dev/null | head -n 1 || true)
    if [ -n "$core" ] && command -v gdb >/dev/null; then
        gdb -q -batch -ex "thread apply all bt 25" .venv/bin/python "$core" 2>&1 | tail -n 200 || true
    fi
fi
exit "$status"
