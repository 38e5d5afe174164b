#!/usr/bin/env bash
# Start train.py on WORKER_NUM processes through MindSpore's msrun (GPU, CPU, or Ascend without a rank table).
# Arguments are validated before msrun starts; msrun stops the other workers when one fails.
set -uo pipefail

PROG="run_msrun_train.sh"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
    cat <<EOF
Usage: bash scripts/$PROG DATA_DIR WORKER_NUM SFT_MODEL_PATH REWARD_MODEL_PATH [train.py args...]

  DATA_DIR           the PPO prompt dataset (e.g. /path/to/dataset.mindrecord)
  WORKER_NUM         total number of training processes (all machines together)
  SFT_MODEL_PATH     MindFormers run YAML of the SFT model (actor and reference)
  REWARD_MODEL_PATH  MindFormers run YAML of the reward model (reward and critic)
  train.py args      passed through, e.g. --device_target GPU --config ppo.yaml

Runs: msrun --worker_num=WORKER_NUM --local_worker_num=LOCAL_WORKER_NUM --master_addr=MASTER_ADDR
      --master_port=MASTER_PORT --node_rank=NODE_RANK --log_dir=LOG_DIR --join=True train.py ...
Each worker gets RANK_ID, DEVICE_ID (local index) and the MS_* variables from msrun; mindrlhf picks the
backend (nccl on GPU, mccl on CPU, hccl on Ascend). Examples:
  bash scripts/$PROG /data/ppo.mindrecord 8 /abs/llama2_7b.yaml /abs/llama2_7b.yaml --device_target GPU
  bash scripts/$PROG /data/tiny.mindrecord 2 tiny_sft.yaml tiny_rm.yaml --device_target CPU   # data parallel

Environment:
  LOCAL_WORKER_NUM      processes on this machine (default: WORKER_NUM, i.e. one machine)
  MASTER_ADDR           scheduler host (default: 127.0.0.1); NODE_RANK: this machine's index (default: 0)
  MASTER_PORT           scheduler port, 1024-65535 (default: 8118)
  OUTPUT_DIR            default parent of LOG_DIR and SAVE_DIR (default: ./output)
  LOG_DIR               msrun's log directory: worker_<rank>.log, scheduler.log (default: \$OUTPUT_DIR/msrun_log)
  SAVE_DIR              train.py --save_dir (metrics, logs, checkpoints) unless among the args (default: \$OUTPUT_DIR)
  PYTHON                interpreter; its directory goes first on PATH because msrun starts 'python'
                        (default: $ROOT/.venv/bin/python if present, else python3)
  MSRUN                 msrun command (default: msrun next to PYTHON, else on PATH)
  MINDRLHF_TRAIN_ENTRY  training script (default: $ROOT/train.py)
EOF
}

# shellcheck source=launcher_common.sh
source "$ROOT/scripts/launcher_common.sh"

if [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]]; then
    usage
    exit 0
fi
if [[ $# -lt 4 ]]; then
    die "expected 4 arguments (DATA_DIR WORKER_NUM SFT_MODEL_PATH REWARD_MODEL_PATH), got $#"
fi

DATA_DIR="$1"
WORKER_NUM="$2"
SFT_MODEL_PATH="$3"
REWARD_MODEL_PATH="$4"
shift 4
EXTRA_ARGS=("$@")

# ---- validate everything before starting anything -----------------------------------------------------------
is_posint "$WORKER_NUM" || die "WORKER_NUM must be a positive integer, got '$WORKER_NUM'"
WORKER_NUM=$((10#$WORKER_NUM))
LOCAL_WORKER_NUM="${LOCAL_WORKER_NUM:-$WORKER_NUM}"
is_posint "$LOCAL_WORKER_NUM" || die "LOCAL_WORKER_NUM must be a positive integer, got '$LOCAL_WORKER_NUM'"
LOCAL_WORKER_NUM=$((10#$LOCAL_WORKER_NUM))
((LOCAL_WORKER_NUM <= WORKER_NUM)) || die "LOCAL_WORKER_NUM ($LOCAL_WORKER_NUM) exceeds WORKER_NUM ($WORKER_NUM)"
if [[ -z "${NODE_RANK:-}" ]]; then
    ((LOCAL_WORKER_NUM == WORKER_NUM)) \
        || die "LOCAL_WORKER_NUM ($LOCAL_WORKER_NUM) < WORKER_NUM ($WORKER_NUM) means several machines: set NODE_RANK (0 on the master)"
    NODE_RANK=0
fi
is_uint "$NODE_RANK" || die "NODE_RANK must be a non-negative integer, got '$NODE_RANK'"
NODE_RANK=$((10#$NODE_RANK))
((NODE_RANK * LOCAL_WORKER_NUM < WORKER_NUM)) \
    || die "NODE_RANK $NODE_RANK * LOCAL_WORKER_NUM $LOCAL_WORKER_NUM leaves no ranks below WORKER_NUM $WORKER_NUM"
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-8118}"
if ! is_uint "$MASTER_PORT" || ((10#$MASTER_PORT < 1024 || 10#$MASTER_PORT > 65535)); then
    die "MASTER_PORT must be an integer in 1024..65535, got '$MASTER_PORT'"
fi
MASTER_PORT=$((10#$MASTER_PORT))
check_run_inputs

default_python
PYTHON_PATH="$(command -v "$PYTHON" 2>/dev/null)" || die "python interpreter '$PYTHON' not found (set PYTHON=/path/to/python)"
PY_BIN="$(dirname "$PYTHON_PATH")"
# msrun runs its workers as 'python SCRIPT ...' from PATH: make that the chosen interpreter.
if [[ ! -x "$PY_BIN/python" ]]; then
    die "msrun starts workers with 'python', but '$PY_BIN' has no 'python' next to '$PYTHON_PATH' (set PYTHON to a venv's python)"
fi
export PATH="$PY_BIN:$PATH"
MSRUN="${MSRUN:-}"
if [[ -z "$MSRUN" ]]; then
    if [[ -x "$PY_BIN/msrun" ]]; then MSRUN="$PY_BIN/msrun"; else MSRUN="msrun"; fi
fi
command -v "$MSRUN" >/dev/null 2>&1 || die "msrun not found ('$MSRUN'); install mindspore in '$PYTHON' or set MSRUN"
TRAIN_ENTRY="${MINDRLHF_TRAIN_ENTRY:-$ROOT/train.py}"
[[ -f "$TRAIN_ENTRY" ]] || die "training script '$TRAIN_ENTRY' not found (set MINDRLHF_TRAIN_ENTRY)"
if [[ "$NODE_RANK" == 0 && ( "$MASTER_ADDR" == 127.0.0.1 || "$MASTER_ADDR" == localhost ) ]]; then
    # Something already listening means msrun's scheduler would fail after the workers started.
    if (exec 3<>"/dev/tcp/127.0.0.1/$MASTER_PORT") 2>/dev/null; then
        die "MASTER_PORT $MASTER_PORT is already in use on this machine; choose another (MASTER_PORT=...)"
    fi
fi

DATA_DIR="$(abspath "$DATA_DIR")"
SFT_MODEL_PATH="$(abspath "$SFT_MODEL_PATH")"
REWARD_MODEL_PATH="$(abspath "$REWARD_MODEL_PATH")"
TRAIN_ENTRY="$(abspath "$TRAIN_ENTRY")"

output_and_save_args
LOG_DIR="${LOG_DIR:-$OUTPUT_DIR/msrun_log}"
mkdir -p "$LOG_DIR" || die "cannot create LOG_DIR '$LOG_DIR'"
LOG_DIR="$(cd "$LOG_DIR" && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# ---- run msrun ------------------------------------------------------------------------------------------------
echo "msrun: $WORKER_NUM worker(s) ($LOCAL_WORKER_NUM here, node $NODE_RANK), scheduler $MASTER_ADDR:$MASTER_PORT"
echo "Logs: $LOG_DIR/worker_<rank>.log and $LOG_DIR/scheduler.log"
set -m # msrun in its own process group: stopping it also stops workers it could not stop itself
"$MSRUN" --worker_num="$WORKER_NUM" --local_worker_num="$LOCAL_WORKER_NUM" --master_addr="$MASTER_ADDR" \
    --master_port="$MASTER_PORT" --node_rank="$NODE_RANK" --log_dir="$LOG_DIR" --join=True \
    "$TRAIN_ENTRY" --sft_model_path "$SFT_MODEL_PATH" --reward_model_path "$REWARD_MODEL_PATH" \
    --dataset_dir "$DATA_DIR" "${SAVE_ARGS[@]+"${SAVE_ARGS[@]}"}" "${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}" &
MSRUN_PID=$!
set +m
on_signal() {
    trap - INT TERM
    echo "$PROG: received $1, stopping msrun and its workers" >&2
    kill -INT "$MSRUN_PID" 2>/dev/null # msrun's own SIGINT handler kills its workers
    local deadline=$((SECONDS + ${STOP_TIMEOUT:-10}))
    while kill -0 "$MSRUN_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    kill -KILL -- "-$MSRUN_PID" 2>/dev/null
    wait "$MSRUN_PID" 2>/dev/null
    [[ "$1" == SIGINT ]] && exit 130
    exit 143
}
trap 'on_signal SIGINT' INT
trap 'on_signal SIGTERM' TERM
wait "$MSRUN_PID"
status=$?
if ((status != 0)); then
    echo "$PROG: msrun exited with code $status; see $LOG_DIR/worker_*.log and $LOG_DIR/scheduler.log" >&2
    exit "$status"
fi
echo "All $LOCAL_WORKER_NUM worker(s) finished; logs are in $LOG_DIR"
