"""The one resumable-run layout, shared by the PPO, SFT and reward-model trainers.

    SAVE_DIR/checkpoints/step_000012/   <model>.ckpt (MindFormers names), <name>_optimizer.ckpt, state.json
    SAVE_DIR/checkpoints/latest         the name of the newest complete directory

A checkpoint directory is written under a hidden temporary name and renamed into place
(`mindrlhf.utils.io.atomic_dir`), and `latest` is replaced atomically after it (`atomic_write`), so a run
killed at any moment leaves the previous checkpoint intact and usable. Temporaries carry their writer's PID
(`.step_000012.pid4242.x1y2.tmp`); the next save (and every entry point at start) removes those of dead
processes (`remove_stale_temporaries`).

Every file carries a SHA-256 sidecar (`actor.ckpt.sha256`, `state.json.sha256`; `mindrlhf.utils.integrity`),
checked when the step is loaded and by `resume_problems`, which entry points run while validating `--resume`.

The learning-rate schedule is not restored with the optimizer: it is a function of the config (peak lr, run
length, warm-up), rebuilt by the trainer, and indexed by the restored step counter (`global_step`); so a resume
with a new `--actor_lr` or `--num_iterations` really trains with the new schedule.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
from typing import Any, Dict, List, Mapping

from mindspore import Tensor, nn

from mindrlhf.utils.checkpoint import (
    CheckpointError,
    assign_parameter,
    check_compatible,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from mindrlhf.utils.integrity import verify_checksum, write_checksum
from mindrlhf.utils.io import atomic_dir, atomic_write

logger = logging.getLogger(__name__)

STATE_FILE = "state.json"
SCHEDULE_SLOTS = ("learning_rate",)  # `LrTable`'s per-step table: rebuilt from the config, never restored
_STEP_DIR = re.compile(r"step_(\d+)")
# `.<name>.pid<PID>.<random>.tmp[.ckpt]` / `.old`, as `mindrlhf.utils.io.temp_prefix` names them
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.pid(?P<pid>\d+)\.[A-Za-z0-9_]+\.(?P<kind>tmp|old)(\.\w+)?")


def _optimizer_slots(optimizer: nn.Optimizer) -> Dict[str, Any]:
    weights = {w.name for w in optimizer.parameters}
    return {p.name: p for p in optimizer.get_parameters() if p.name not in weights}


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(save_dir: str) -> List[str]:
    """Remove the temporaries a dead process left in `save_dir` and `save_dir/checkpoints`; returns their paths.

    A killed save leaves a full-size hidden `.step_N.pid<PID>.*.tmp` folder; its PID names the writer, and only
    those of processes that no longer exist are removed (a live writer, e.g. another rank or a second run on the
    same folder, keeps its own). A `.old` folder (a crash while a step was being replaced) is put back when its
    step is missing, else removed. One log line per removal.
    """
    removed = []
    for folder in (save_dir, os.path.join(save_dir, "checkpoints")):
        if not os.path.isdir(folder):
            continue
        for entry in sorted(os.listdir(folder)):
            match = _TEMPORARY.fullmatch(entry)
            if match is None or _pid_alive(int(match["pid"])):
                continue
            path = os.path.join(folder, entry)
            target = os.path.join(folder, match["name"])
            kept = os.path.join(path, match["name"])
            if match["kind"] == "old" and os.path.isdir(kept) and not os.path.lexists(target):
                shutil.move(kept, target)  # put the step back where `latest` may point
                logger.warning("restored %s from %s (left by process %s)", target, path, match["pid"])
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
            logger.warning(
                "removed %s, a temporary left by process %s, which no longer runs", path, match["pid"]
            )
            removed.append(path)
    return removed


def _last_good(save_dir: str) -> str:
    try:
        return f"step {int(os.path.basename(latest_checkpoint_dir(save_dir))[5:])}"
    except (FileNotFoundError, ValueError, OSError):
        return "none (no checkpoint was completed yet)"


def optimizer_state(optimizer: nn.Optimizer) -> Dict[str, Tensor]:
    """Everything an optimiser keeps between steps (Adam moments, global_step), for exact resume."""
    return {name: Tensor(p.asnumpy(), p.dtype) for name, p in _optimizer_slots(optimizer).items()}


def load_optimizer_state(optimizer: nn.Optimizer, state: Mapping[str, Tensor], source: str) -> None:
    """Restore `optimizer_state` output (Adam moments, global_step); names and shapes must match exactly
    (checked before loading). The lr table (`SCHEDULE_SLOTS`) keeps the freshly built schedule."""
    own = {n: p for n, p in _optimizer_slots(optimizer).items() if n not in SCHEDULE_SLOTS}
    state = {n: v for n, v in state.items() if n not in SCHEDULE_SLOTS}
    check_compatible(
        {n: tuple(p.shape) for n, p in own.items()},
        {n: tuple(v.shape) for n, v in state.items()},
        source,
        True,
    )
    for name, param in own.items():
        assign_parameter(param, state[name])


def save_run_state(
    save_dir: str,
    step: int,
    models: Mapping[str, nn.Cell],
    optimizers: Mapping[str, nn.Optimizer],
    state: Dict[str, Any],
) -> str:
    """Write models, optimiser states and a JSON `state` as `checkpoints/step_XXXXXX`; returns that directory.

    A full disk raises one CheckpointError: "disk full while writing <file>; the last good checkpoint is step N"
    (the temporary folder is removed, the previous step and `latest` are untouched).
    """
    root = os.path.join(save_dir, "checkpoints")
    name = f"step_{step:06d}"
    final = os.path.join(root, name)
    remove_stale_temporaries(save_dir)
    current = final
    try:
        with atomic_dir(final) as tmp:
            for key, model in models.items():
                current = os.path.join(final, f"{key}.ckpt")
                save_checkpoint(model, os.path.join(tmp, f"{key}.ckpt"))
            for key, optimizer in optimizers.items():
                current = os.path.join(final, f"{key}_optimizer.ckpt")
                save_checkpoint(optimizer_state(optimizer), os.path.join(tmp, f"{key}_optimizer.ckpt"))
            current = os.path.join(final, STATE_FILE)
            with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as f:
                files = {"models": sorted(models), "optimizers": sorted(optimizers)}
                json.dump({"step": step, **state, "files": files}, f, indent=2)
            write_checksum(os.path.join(tmp, STATE_FILE))
            current = final
        current = os.path.join(root, "latest")
        with atomic_write(current) as f:
            f.write(name + "\n")
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointError(
                f"disk full while writing {current}; the last good checkpoint is {_last_good(save_dir)} "
                f"(in {root}); free space and resume with --resume {save_dir}"
            ) from None
        raise
    logger.info("saved checkpoint %s", final)
    return final


def latest_checkpoint_dir(save_dir: str) -> str:
    """The directory `checkpoints/latest` names; a clear FileNotFoundError when there is none."""
    pointer = os.path.join(save_dir, "checkpoints", "latest")
    if not os.path.isfile(pointer):
        raise FileNotFoundError(
            f"{pointer}: no checkpoint to resume from (was {save_dir} written by a training run?)"
        )
    with open(pointer, encoding="utf-8") as f:
        return os.path.join(save_dir, "checkpoints", f.read().strip())


def load_run_state(
    save_dir: str, models: Mapping[str, nn.Cell], optimizers: Mapping[str, nn.Optimizer]
) -> Dict[str, Any]:
    """Restore what `save_run_state` wrote under `latest` (strictly) and return its JSON state."""
    ckpt_dir = latest_checkpoint_dir(save_dir)
    verify_checksum(os.path.join(ckpt_dir, STATE_FILE))
    with open(os.path.join(ckpt_dir, STATE_FILE), encoding="utf-8") as f:
        state = json.load(f)
    for key, model in models.items():
        load_checkpoint(model, os.path.join(ckpt_dir, f"{key}.ckpt"))
    for key, optimizer in optimizers.items():
        path = os.path.join(ckpt_dir, f"{key}_optimizer.ckpt")
        load_optimizer_state(optimizer, read_checkpoint(path), path)
    logger.info("resumed from %s (step %d)", ckpt_dir, state["step"])
    return state
