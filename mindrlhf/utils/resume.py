"""`--resume` checked before anything starts, like every other input: `resume_problems` lists what is wrong.

What a resume needs (layout: `mindrlhf.utils.run_state`): `checkpoints/latest` naming an existing complete
`step_N` folder; in it every model and optimizer file, readable, matching its `.sha256` sidecar, with the names
and shapes of the models the configs describe; a well-formed `state.json` for step N; and a trainer config that
differs from the saved one only in fields a resume may change (`MAY_CHANGE`).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from mindrlhf.errors import MindRLHFError
from mindrlhf.utils.checkpoint import META_PREFIX, check_compatible, read_checkpoint
from mindrlhf.utils.integrity import verify_checksum
from mindrlhf.utils.run_state import SCHEDULE_SLOTS, STATE_FILE

logger = logging.getLogger(__name__)

Shapes = Mapping[str, Tuple[int, ...]]

# Fields a resume may change, per trainer kind. The run length and the schedule (rebuilt from the config; the
# optimizer's step counter is kept), the intervals, and the non-finite-score patience. Everything else (batch
# sizes, seeds, the algorithm's coefficients, the data) would make the continuation another experiment.
_COMMON = {
    "save_interval", "log_interval", "warmup_steps", "lr_decay", "min_lr_ratio", "max_nonfinite_iterations",
}  # fmt: skip
MAY_CHANGE: Dict[str, frozenset] = {
    "ppo": frozenset(_COMMON | {"num_iterations", "actor_lr", "critic_lr"}),
    "sft": frozenset(_COMMON | {"epochs", "max_steps", "learning_rate"}),
    "rm": frozenset(_COMMON | {"epochs", "max_steps", "learning_rate", "eval_interval"}),
}
_OPTIMIZER_SLOTS = ("adam_m.", "adam_v.")


def _attempt(problems: List[str], fn, *args):
    try:
        return fn(*args)
    except MindRLHFError as exc:
        problems.append(str(exc))
        return None


def _step_dir(resume: str, problems: List[str]) -> Optional[str]:
    root = os.path.join(resume, "checkpoints")
    pointer = os.path.join(root, "latest")
    if not os.path.isfile(pointer):
        problems.append(
            f"--resume {resume}: no checkpoints/latest there (nothing to resume; was it a save_dir of this trainer?)"
        )
        return None
    with open(pointer, encoding="utf-8", errors="replace") as f:
        name = f.read().strip()
    folder = os.path.join(root, name)
    if not name or os.sep in name or not os.path.isdir(folder):
        steps = sorted(
            d for d in os.listdir(root) if d.startswith("step_") and os.path.isdir(os.path.join(root, d))
        )
        problems.append(
            f"{pointer}: names {name!r}, which is not a folder in {root} (deleted?); the step folders there are "
            f"{', '.join(steps) or 'none'}: write the newest complete one into {pointer}"
        )
        return None
    return folder


def _check_optimizer(params, shapes: Shapes, path: str, problems: List[str]) -> None:
    """Adam moments `adam_m.<w>` / `adam_v.<w>` for weights `w` of the model, with `w`'s shape; a step counter."""
    found = {n: tuple(v.shape) for n, v in params.items() if not n.startswith(META_PREFIX)}
    wrong = []
    for name, shape in found.items():
        slot = next((p for p in _OPTIMIZER_SLOTS if name.startswith(p)), None)
        if slot is None:
            continue
        weight = name[len(slot) :]
        if weight not in shapes:
            wrong.append(f"{name} (no weight {weight} in the model)")
        elif tuple(shapes[weight]) != shape:
            wrong.append(f"{name} (checkpoint {list(shape)} vs model {list(shapes[weight])})")
    moments = [n for n in found if n.startswith(_OPTIMIZER_SLOTS)]
    if wrong or not moments or "global_step" not in found:
        detail = "; ".join(wrong[:5]) + (f" (+{len(wrong) - 5} more)" if len(wrong) > 5 else "")
        problems.append(
            f"{path}: optimizer state does not fit the model ("
            + (detail or "no Adam moments or no global_step")
            + "); was it saved by a run with another model config?"
        )


def _read_state(
    path: str, step: int, required: Sequence[str], problems: List[str]
) -> Optional[Dict[str, Any]]:
    if not os.path.isfile(path):
        problems.append(f"{path}: missing (the step folder is incomplete)")
        return None
    if _attempt(problems, verify_checksum, path) is None:  # None: a mismatch, recorded
        return None
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except (ValueError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: not valid JSON ({exc}); the file is cut or garbled")
        return None
    if not isinstance(state, dict):
        problems.append(f"{path}: expected a JSON object, got {type(state).__name__}")
        return None
    missing = [k for k in ("step", *required) if k not in state]
    if missing:
        problems.append(
            f"{path}: missing key(s) {', '.join(missing)}; the file is not a state of this trainer"
        )
        return None
    if state["step"] != step:
        problems.append(f"{path}: records step {state['step']!r} but its folder is step {step}")
        return None
    return state


def _check_files(folder: str, key: str, shapes: Optional[Shapes], with_optimizer: bool, problems: List[str]):
    """`<key>.ckpt` (and `<key>_optimizer.ckpt`): present, checksum, readable, names and shapes."""
    path = os.path.join(folder, f"{key}.ckpt")
    if not os.path.isfile(path):
        problems.append(f"{path}: missing (the step folder is incomplete)")
        return
    params = _attempt(problems, read_checkpoint, path)
    if params is not None and shapes is not None:
        found = {n: tuple(v.shape) for n, v in params.items() if not n.startswith(META_PREFIX)}
        _attempt(problems, check_compatible, shapes, found, path, True)
    if not with_optimizer:
        return
    opt = os.path.join(folder, f"{key}_optimizer.ckpt")
    if not os.path.isfile(opt):
        problems.append(f"{opt}: missing (the step folder is incomplete)")
        return
    opt_params = _attempt(problems, read_checkpoint, opt)
    if opt_params is not None and shapes is not None:
        _check_optimizer(
            {k: v for k, v in opt_params.items() if k not in SCHEDULE_SLOTS}, shapes, opt, problems
        )


def config_changes(
    saved: Mapping[str, Any], now: Mapping[str, Any], kind: str, where: str
) -> Tuple[List[str], Dict[str, Tuple[Any, Any]]]:
    """(problems, changes): fields that differ from the saved run's config; allowed ones go to `changes`.

    A field unknown to the saved run (added since) is not compared."""
    allowed = MAY_CHANGE[kind]
    problems, changes = [], {}
    for key in sorted(set(saved) & set(now)):
        if saved[key] == now[key]:
            continue
        if key in allowed:
            changes[key] = (saved[key], now[key])
        else:
            problems.append(
                f"field '{key}' is {now[key]!r} but the run in {where} was saved with {key}={saved[key]!r}; it "
                f"cannot change on resume (only {', '.join(sorted(allowed))} can): pass --{key} {saved[key]} "
                "or start a new run in a new --save_dir"
            )
    return problems, changes


def resume_problems(
    resume: str,
    models: Mapping[str, Optional[Shapes]],
    optimizers: Sequence[str],
    state_keys: Sequence[str],
    kind: Optional[str] = None,
    config: Optional[Mapping[str, Any]] = None,
) -> Tuple[List[str], Optional[Dict[str, Any]]]:
    """Check the run saved in `resume` -> (problems, its state.json or None).

    models: key -> expected `{name: shape}` of `<key>.ckpt` (None: only readable and checksummed, when the config
    describing it has its own problem); optimizers: keys whose `<key>_optimizer.ckpt` must fit that model;
    state_keys: what state.json must hold besides `step`; config (with `kind`): the trainer config now, compared
    with the saved one (`config_changes`). Checksums are checked before anything is parsed.
    """
    problems: List[str] = []
    folder = _step_dir(resume, problems)
    if folder is None:
        return problems, None
    step_text = os.path.basename(folder)[len("step_") :]
    step = int(step_text) if step_text.isdigit() else -1
    state = _read_state(os.path.join(folder, STATE_FILE), step, state_keys, problems)
    # The files the run wrote, as state.json lists them (a critic-free run has no critic); else the caller's.
    listed = state.get("files") if state is not None else None
    keys = listed["models"] if isinstance(listed, dict) and "models" in listed else list(models)
    opt_keys = (
        listed["optimizers"] if isinstance(listed, dict) and "optimizers" in listed else list(optimizers)
    )
    for key in keys:
        _check_files(folder, key, models.get(key), key in opt_keys, problems)
    if state is not None and config is not None and kind is not None:
        saved = state.get("config")
        if isinstance(saved, dict):
            bad, changes = config_changes(saved, config, kind, resume)
            problems.extend(bad)
            for key, (old, new) in changes.items():
                logger.info("resume: %s changes from %r (saved run) to %r", key, old, new)
    return problems, state
