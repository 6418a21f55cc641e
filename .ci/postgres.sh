#!/usr/bin/env bash
# Optional: start one throwaway PostgreSQL on a loopback port for the whole test run, instead of
# the one the test session starts itself. Prints the exports the tests read:
#   eval "$(bash .ci/postgres.sh start)"   # sets LLM_INIT_TEST_POSTGRES_URL and PGPASSWORD
#   ... run the tests ...
#   bash .ci/postgres.sh stop
# Needs Debian's postgresql package; as root, the server runs as the postgres user.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${LLM_INIT_CI_POSTGRES_DIR:-/tmp/llm-init-ci-postgres}
case "${1:-}" in
    start) rm -rf "$dir"; .venv/bin/python -m tests.support.postgres start "$dir" ;;
    stop) .venv/bin/python -m tests.support.postgres stop "$dir"; rm -rf "$dir" ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
