#!/usr/bin/env bash
# Create (or reuse) ./.venv and install mindrlhf with its test extras. Sourced by run_demo.sh and run_tests.sh.
# Idempotent: a stamp file records the hash of setup.py so a re-run skips pip when nothing changed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MINDRLHF_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
STAMP="$VENV/.mindrlhf-installed"
WANT="$(cat "$ROOT/setup.py" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "[setup] installing mindrlhf and its test extras into $VENV (about a minute)"
  LOG="$VENV/install.log"
  if ! { "$VENV/bin/python" -m pip install --upgrade pip && "$VENV/bin/python" -m pip install -e "$ROOT[test,extras]"; } >"$LOG" 2>&1; then
    tail -n 30 "$LOG" >&2
    echo "[setup] pip install failed; full log: $LOG" >&2
    exit 1
  fi
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"   # msrun starts workers with the first python on PATH
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
