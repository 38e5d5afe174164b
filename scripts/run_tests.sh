#!/usr/bin/env bash
# Set up the environment if needed, check the style (ruff check + ruff format --check, as pyproject.toml
# configures them), then run the whole test suite in two processes. Extra arguments go to pytest. Fails when any
# step fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
echo "[lint] ruff check . && ruff format --check ."
python -m ruff check .
python -m ruff format --check .
# Two worker processes (pytest-xdist; MINDRLHF_TEST_WORKERS=0 runs in one): most tests spend their time compiling
# graphs on one core. --dist loadscope keeps a module's tests (and its module fixtures) in one worker;
# --no-loadscope-reorder hands modules out in collection order, where tests/conftest.py puts the longest first
# (xdist's default order is by number of tests, which left the 5-minute demo test to the end).
WORKERS="${MINDRLHF_TEST_WORKERS:-2}"
if [ "$WORKERS" = "0" ]; then exec python -m pytest --durations=15 "$@"; fi
exec python -m pytest -n "$WORKERS" --dist loadscope --no-loadscope-reorder --durations=15 "$@"
