# Shared by run_distribute_train.sh and run_msrun_train.sh (sourced; needs PROG and ROOT set).
# Argument checks, the interpreter default, absolute paths and the --save_dir rule live here once.

die() {
    echo "$PROG: error: $*" >&2
    echo "Run 'bash scripts/$PROG -h' for usage." >&2
    exit 2
}

is_uint() { [[ "$1" =~ ^[0-9]{1,9}$ ]]; }
is_posint() { [[ "$1" =~ ^[0-9]{1,9}$ ]] && ((10#$1 >= 1)); }

abspath() { (cd "$(dirname "$1")" && printf '%s/%s' "$(pwd)" "$(basename "$1")"); }

# DATA_DIR, SFT_MODEL_PATH and REWARD_MODEL_PATH must exist (train.py checks their contents).
check_run_inputs() {
    [[ -e "$DATA_DIR" ]] || die "DATA_DIR '$DATA_DIR' does not exist (give the dataset .mindrecord file or its directory)"
    [[ -f "$SFT_MODEL_PATH" ]] || die "SFT_MODEL_PATH '$SFT_MODEL_PATH' is not a file (give the SFT model's run YAML)"
    [[ -f "$REWARD_MODEL_PATH" ]] \
        || die "REWARD_MODEL_PATH '$REWARD_MODEL_PATH' is not a file (give the reward model's run YAML)"
}

# PYTHON defaults to the project's .venv interpreter, else python3.
default_python() {
    if [[ -z "${PYTHON:-}" ]]; then
        if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON="python3"; fi
    fi
}

# OUTPUT_DIR (created, made absolute) and SAVE_ARGS: --save_dir ${SAVE_DIR:-$OUTPUT_DIR} unless EXTRA_ARGS has one.
output_and_save_args() {
    OUTPUT_DIR="${OUTPUT_DIR:-$PWD/output}"
    mkdir -p "$OUTPUT_DIR" || die "cannot create OUTPUT_DIR '$OUTPUT_DIR'"
    OUTPUT_DIR="$(cd "$OUTPUT_DIR" && pwd)"
    SAVE_ARGS=(--save_dir "${SAVE_DIR:-$OUTPUT_DIR}")
    local arg
    for arg in "${EXTRA_ARGS[@]+"${EXTRA_ARGS[@]}"}"; do
        if [[ "$arg" == --save_dir || "$arg" == --save_dir=* ]]; then SAVE_ARGS=(); fi
    done
}
