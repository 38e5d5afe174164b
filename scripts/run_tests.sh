#!/usr/bin/env bash
# Set up the environment if needed, check the style (ruff check + ruff format --check, as pyproject.toml
# configures them), then run the whole test suite. Extra arguments go to pytest. Fails when any step fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
echo "[lint] ruff check . && ruff format --check ."
python -m ruff check .
python -m ruff format --check .
exec python -m pytest "$@"
