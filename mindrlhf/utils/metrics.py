"""The one metrics sink: one JSON object per line (always), TensorBoard event files when tensorboardX is installed."""

from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Dict, Optional

logger = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """numpy/MindSpore scalars -> Python numbers; NaN/inf kept as strings JSON can hold."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


class MetricsWriter:
    """`write(step, {"ppo/policy_loss": 0.1, ...})` appends `{"step": step, ...}` to `path` and flushes.

    On resume the file is truncated to the lines with `step <= resume_step`, so a resumed run's metrics file is
    the same as an uninterrupted run's.
    """

    def __init__(self, path: str, tensorboard_dir: Optional[str] = None, resume_step: Optional[int] = None):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        if resume_step is not None and os.path.exists(path):
            repair_metrics(path)  # a torn last line (killed mid-write) must not block the resume
            with open(path, encoding="utf-8") as f:
                kept = [
                    line for line in f if line.strip() and json.loads(line).get("step", -1) <= resume_step
                ]
            with open(path, "w", encoding="utf-8") as f:
                f.writelines(kept)
        elif resume_step is None and os.path.exists(path):
            os.remove(path)
        self.path = path
        self._file = open(path, "a", encoding="utf-8")
        self._tb = None
        if tensorboard_dir:
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(tensorboard_dir)
            except ImportError:
                logger.info("tensorboardX not installed: metrics go to %s only", path)

    def write(self, step: int, metrics: Dict[str, Any]) -> None:
        record = {"step": step, **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def repair_metrics(path: str) -> Optional[str]:
    """Drop a torn last line (a run killed mid-write) from a metrics JSONL file, with a warning.

    Returns None when the file is absent, whole or repaired; a problem message (file and line) when a line
    other than the last is not JSON, which no crash explains.
    """
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    bad = []
    for number, line in enumerate(lines, 1):
        try:
            if line.strip():
                json.loads(line)
        except ValueError:
            bad.append(number)
    if not bad:
        return None
    if bad != [len(lines)]:
        return (
            f"{path}: line {bad[0]} is not JSON (and not a torn last line); fix or delete the file to resume"
        )
    from mindrlhf.utils.io import atomic_write

    with atomic_write(path, binary=True) as f:
        f.write(b"".join(line + b"\n" for line in lines[:-1]))
    logger.warning("%s: dropped a torn last line %d (a run stopped while writing it)", path, len(lines))
    return None


def read_metrics(path: str):
    """All records of a metrics JSONL file, in order."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
