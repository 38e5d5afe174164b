#!/usr/bin/env bash
# Start one train.py per local Ascend NPU from an HCCL rank table (the tutorial's launcher).
# Everything is validated before any rank starts; if one rank fails (or on Ctrl-C) the others are stopped.
set -uo pipefail

PROG="run_distribute_train.sh"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    cat <<EOF
Usage: bash scripts/$PROG DATA_DIR RANK_TABLE_FILE RANK_START LOCAL_DEVICE_NUM SFT_MODEL_PATH REWARD_MODEL_PATH [train.py args...]

  DATA_DIR           the PPO prompt dataset (e.g. /path/to/dataset.mindrecord)
  RANK_TABLE_FILE    HCCL rank table JSON (write one: python -m mindrlhf.parallel.rank_table write -h)
  RANK_START         global rank of this machine's first device (0 on a single server)
  LOCAL_DEVICE_NUM   how many ranks to start on this machine (8 for one 8-NPU server)
  SFT_MODEL_PATH     MindFormers run YAML of the SFT model (actor and reference)
  REWARD_MODEL_PATH  MindFormers run YAML of the reward model (reward and critic)
  train.py args      passed through, e.g. --config ppo.yaml --resume OUTPUT

Rank RANK_START+i runs on the device the rank table lists for it, with RANK_TABLE_FILE, RANK_SIZE (devices in
the table), RANK_ID and DEVICE_ID set. Example (one server, 8 NPUs):
  bash scripts/$PROG /data/ppo.mindrecord /data/hccl_8p_01234567_127.0.0.1.json 0 8 \\
      /abs/model_configs/llama2_config/llama2_7b.yaml /abs/model_configs/llama2_config/llama2_7b.yaml

Environment:
  OUTPUT_DIR            logs go to \$OUTPUT_DIR/rank_<RANK_ID>/train.log (default: ./output)
  SAVE_DIR              train.py --save_dir (metrics, logs, checkpoints) unless among the args (default: \$OUTPUT_DIR)
  PYTHON                interpreter (default: $ROOT/.venv/bin/python if present, else python3)
  MINDRLHF_TRAIN_ENTRY  training script (default: $ROOT/train.py)
  STOP_TIMEOUT          seconds between SIGTERM and SIGKILL when stopping ranks (default: 10)
EOF
}

# shellcheck source=launcher_common.sh
source "$ROOT/scripts/launcher_common.sh"

if [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then
    usage
    exit 0
fi
if [[ $# -lt 6 ]]; then
    die "expected 6 arguments (DATA_DIR RANK_TABLE_FILE RANK_START LOCAL_DEVICE_NUM SFT_MODEL_PATH REWARD_MODEL_PATH), got $#"
fi

DATA_DIR="$1"
RANK_TABLE_FILE="$2"
RANK_START="$3"
LOCAL_DEVICE_NUM="$4"
SFT_MODEL_PATH="$5"
REWARD_MODEL_PATH="$6"
shift 6
EXTRA_ARGS=("$@")

# ---- validate everything before starting anything -----------------------------------------------------------
is_uint "$RANK_START" || die "RANK_START must be a non-negative integer, got '$RANK_START'"
is_posint "$LOCAL_DEVICE_NUM" || die "LOCAL_DEVICE_NUM must be a positive integer, got '$LOCAL_DEVICE_NUM'"
RANK_START=$((10#$RANK_START))
LOCAL_DEVICE_NUM=$((10#$LOCAL_DEVICE_NUM))
[[ -f "$RANK_TABLE_FILE" ]] || die "RANK_TABLE_FILE '$RANK_TABLE_FILE' is not a file"
check_run_inputs

default_python
command -v "$PYTHON" >/dev/null 2>&1 || die "python interpreter '$PYTHON' not found (set PYTHON=/path/to/python)"
TRAIN_ENTRY="${MINDRLHF_TRAIN_ENTRY:-$ROOT/train.py}"
[[ -f "$TRAIN_ENTRY" ]] || die "training script '$TRAIN_ENTRY' not found (set MINDRLHF_TRAIN_ENTRY)"
STOP_TIMEOUT="${STOP_TIMEOUT:-10}"
is_uint "$STOP_TIMEOUT" || die "STOP_TIMEOUT must be a non-negative integer, got '$STOP_TIMEOUT'"

DATA_DIR="$(abspath "$DATA_DIR")"
RANK_TABLE_FILE="$(abspath "$RANK_TABLE_FILE")"
SFT_MODEL_PATH="$(abspath "$SFT_MODEL_PATH")"
REWARD_MODEL_PATH="$(abspath "$REWARD_MODEL_PATH")"

# The rank table's checks (JSON, keys, unique 0..N-1 ranks, RANK_START+LOCAL_DEVICE_NUM fits) live in Python.
if ! TABLE_ENV="$(PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m mindrlhf.parallel.rank_table validate \
    "$RANK_TABLE_FILE" --rank_start "$RANK_START" --local_device_num "$LOCAL_DEVICE_NUM" --print_env 2>&1)"; then
    if [[ "$TABLE_ENV" == *Traceback* ]]; then
        die "could not run the rank table check with '$PYTHON' (is mindrlhf's environment installed?): ${TABLE_ENV##*$'\n'}"
    fi
    echo "$PROG: error: ${TABLE_ENV#error: }" >&2
    exit 2
fi
RANK_SIZE=""
DEVICE_IDS=()
SERVER_ID=""
while IFS='=' read -r key value; do
    case "$key" in
        RANK_SIZE) RANK_SIZE="$value" ;;
        SERVER_ID) SERVER_ID="$value" ;;
        DEVICE_IDS) read -r -a DEVICE_IDS <<<"$value" ;;
    esac
done <<<"$TABLE_ENV"
[[ -n "$RANK_SIZE" && ${#DEVICE_IDS[@]} -eq $LOCAL_DEVICE_NUM ]] \
    || die "could not read the rank table summary from '$PYTHON -m mindrlhf.parallel.rank_table': $TABLE_ENV"

output_and_save_args

# ---- start the ranks -----------------------------------------------------------------------------------------
# Job control puts each rank in its own process group, so stopping a rank also stops anything it spawned.
set -m
PIDS=()
RANKS=()
stop_ranks() {
    local pid deadline
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do kill -TERM -- "-$pid" 2>/dev/null; done
    deadline=$((SECONDS + STOP_TIMEOUT))
    for pid in "${PIDS[@]+"${PIDS[@]}"}"; do
        while kill -0 -- "-$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        kill -KILL -- "-$pid" 2>/dev/null
    done
    wait 2>/dev/null
}
on_signal() {
    trap - INT TERM
    echo "$PROG: received $1, stopping ${#PIDS[@]} rank(s)" >&2
    stop_ranks
    [[ "$1" == SIGINT ]] && exit 130
    exit 143
}
trap 'on_signal SIGINT' INT
trap 'on_signal SIGTERM' TERM

for ((i = 0; i < LOCAL_DEVICE_NUM; i++)); do
    rank=$((RANK_START + i))
    device="${DEVICE_IDS[$i]}"
    log_dir="$OUTPUT_DIR/rank_$rank"
    mkdir -p "$log_dir" || { stop_ranks; die "cannot create log directory '$log_dir'"; }
    RANK_TABLE_FILE="$RANK_TABLE_FILE" RANK_SIZE="$RANK_SIZE" RANK_ID="$rank" DEVICE_ID="$device" \
        PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
        "$PYTHON" "$TRAIN_ENTRY" --sft_model_path "$SFT_MODEL_PATH" --reward_model_path "$REWARD_MODEL_PATH" \
        --dataset_dir "$DATA_DIR" "${SAVE_ARGS[@]+"${SAVE_ARGS[@]}"}" "${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}" \
        >"$log_dir/train.log" 2>&1 &
    PIDS+=("$!")
    RANKS+=("$rank")
    echo "rank $rank (device $device, pid $!): $log_dir/train.log"
done
set +m  # process groups are fixed at fork; without job control bash prints no "Terminated" job notices
echo "Started ranks $RANK_START..$((RANK_START + LOCAL_DEVICE_NUM - 1)) of $RANK_SIZE on server $SERVER_ID; follow with: tail -f $OUTPUT_DIR/rank_$RANK_START/train.log"

# ---- wait: the first failure stops the others ------------------------------------------------------------------
declare -A FINISHED=()
status=0
while ((${#FINISHED[@]} < ${#PIDS[@]})); do
    wait -n 2>/dev/null
    for j in "${!PIDS[@]}"; do
        pid="${PIDS[$j]}"
        [[ -n "${FINISHED[$pid]:-}" ]] && continue
        kill -0 "$pid" 2>/dev/null && continue
        wait "$pid" 2>/dev/null
        rc=$?
        FINISHED[$pid]=1
        if ((rc != 0 && status == 0)); then
            status=$rc
            echo "$PROG: rank ${RANKS[$j]} exited with code $rc; stopping the other ranks. Last lines of its log:" >&2
            tail -n 20 "$OUTPUT_DIR/rank_${RANKS[$j]}/train.log" >&2
        fi
    done
    if ((status != 0)); then
        trap - INT TERM
        stop_ranks
        echo "$PROG: failed; logs are in $OUTPUT_DIR/rank_*/train.log" >&2
        exit "$status"
    fi
done
echo "All $LOCAL_DEVICE_NUM rank(s) finished; logs are in $OUTPUT_DIR/rank_*/train.log"
