"""The one resumable-run layout, shared by the PPO, SFT and reward-model trainers.

    SAVE_DIR/checkpoints/step_000012/   <model>.ckpt (MindFormers names), <name>_optimizer.ckpt, state.json
    SAVE_DIR/checkpoints/latest         the name of the newest complete directory

A checkpoint directory is written under a hidden temporary name and renamed into place
(`mindrlhf.utils.io.atomic_dir`), and `latest` is replaced atomically after it (`atomic_write`), so a run
killed at any moment leaves the previous checkpoint intact and usable.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, Mapping

from mindspore import Tensor, nn

from mindrlhf.utils.checkpoint import (
    assign_parameter,
    check_compatible,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from mindrlhf.utils.io import atomic_dir, atomic_write

logger = logging.getLogger(__name__)


def _optimizer_slots(optimizer: nn.Optimizer) -> Dict[str, Any]:
    weights = {w.name for w in optimizer.parameters}
    return {p.name: p for p in optimizer.get_parameters() if p.name not in weights}


def optimizer_state(optimizer: nn.Optimizer) -> Dict[str, Tensor]:
    """Everything an optimiser keeps between steps (Adam moments, global_step), for exact resume."""
    return {name: Tensor(p.asnumpy(), p.dtype) for name, p in _optimizer_slots(optimizer).items()}


def load_optimizer_state(optimizer: nn.Optimizer, state: Mapping[str, Tensor], source: str) -> None:
    """Restore `optimizer_state` output; names and shapes must match exactly (checked before loading)."""
    own = _optimizer_slots(optimizer)
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
    """Write models, optimiser states and a JSON `state` as `checkpoints/step_XXXXXX`; returns that directory."""
    root = os.path.join(save_dir, "checkpoints")
    name = f"step_{step:06d}"
    final = os.path.join(root, name)
    with atomic_dir(final) as tmp:
        for key, model in models.items():
            save_checkpoint(model, os.path.join(tmp, f"{key}.ckpt"))
        for key, optimizer in optimizers.items():
            save_checkpoint(optimizer_state(optimizer), os.path.join(tmp, f"{key}_optimizer.ckpt"))
        with open(os.path.join(tmp, "state.json"), "w", encoding="utf-8") as f:
            json.dump({"step": step, **state}, f, indent=2)
    with atomic_write(os.path.join(root, "latest")) as f:
        f.write(name + "\n")
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
    with open(os.path.join(ckpt_dir, "state.json"), encoding="utf-8") as f:
        state = json.load(f)
    for key, model in models.items():
        load_checkpoint(model, os.path.join(ckpt_dir, f"{key}.ckpt"))
    for key, optimizer in optimizers.items():
        path = os.path.join(ckpt_dir, f"{key}_optimizer.ckpt")
        load_optimizer_state(optimizer, read_checkpoint(path), path)
    logger.info("resumed from %s (step %d)", ckpt_dir, state["step"])
    return state
