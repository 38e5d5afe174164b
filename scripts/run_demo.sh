#!/usr/bin/env bash
# The main job: set up the environment if needed, then run the end-to-end RLHF demo on CPU.
# Extra arguments go to examples/rlhf_demo/run_demo.py (--output_dir DIR, --seed N, --quick).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec python examples/rlhf_demo/run_demo.py "$@"
