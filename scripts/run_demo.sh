#!/usr/bin/env bash
# The main job: set up the environment if needed, then run the CPU demo. Extra arguments go to the demo.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec python examples/quickstart.py "$@"
