#!/usr/bin/env bash
# The main job: set up the environment if needed, then run an end-to-end demo on CPU.
#   bash scripts/run_demo.sh [--task alignment|arithmetic] [demo arguments ...]
# alignment (default): SFT -> reward model -> PPO, and SFT -> DPO on the same preference pairs, turning harmful
#   compliance into refusals; both judged on held-out requests (examples/rlhf_demo/run_demo.py: --output_dir DIR,
#   --seed N, --quick (no DPO unless --dpo), --no_dpo).
# arithmetic: SFT -> GRPO with a verifiable exact-match reward on held-out two-digit additions
#   (examples/arithmetic_demo/run_demo.py: --output_dir DIR, --seed N, --quick, --estimators grpo,dr_grpo,rloo,gae).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TASK=alignment
if [ "${1:-}" = "--task" ]; then
  TASK="${2:?--task needs a value: alignment or arithmetic}"
  shift 2
elif [[ "${1:-}" == --task=* ]]; then
  TASK="${1#--task=}"
  shift
fi
case "$TASK" in
  alignment) DEMO=examples/rlhf_demo/run_demo.py ;;
  arithmetic) DEMO=examples/arithmetic_demo/run_demo.py ;;
  *) echo "run_demo.sh: unknown --task '$TASK' (use alignment or arithmetic)" >&2; exit 2 ;;
esac
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec python "$DEMO" "$@"
