"""The one optimiser step used by every trainer: loss scaling, overflow skip, global-norm clipping, AdamW.

MindSpore's `TrainOneStepWithLossScaleCell` needs NPU float-status ops and fails on CPU, so the loss scale is
kept here as two Parameters and updated in-graph with MindFormers' `DynamicLossScaleUpdateCell` semantics:
on non-finite gradients the update is skipped and the scale is divided by `scale_factor` (not below 1); after
`scale_window` finite steps in a row it is multiplied by `scale_factor`. A fixed scale (MindFormers'
`scale_sense: 1.0`, `FixedLossScaleUpdateCell`) never changes; overflowing steps are still skipped.

`build_train_step` is the one place where a trainer turns its config (peak lr, schedule, AdamW fields) and the run
YAML's `runner_wrapper.scale_sense` into an optimizer and a TrainStep (PPO actor and critic, SFT, reward model).
"""

from __future__ import annotations

import dataclasses
import logging
import numbers
from typing import Any, Dict, List, Mapping, Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.nn.learning_rate_schedule import LearningRateSchedule

from mindrlhf.configs.loader import ConfigError
from mindrlhf.trainer.optim import FP32StateAdamWeightDecay

logger = logging.getLogger(__name__)

SCALE_SENSE = "runner_wrapper.scale_sense"
_SCALE_KEYS = ("type", "loss_scale_value", "scale_factor", "scale_window")
_SCALE_TYPES = ("DynamicLossScaleUpdateCell", "FixedLossScaleUpdateCell")


@dataclasses.dataclass(frozen=True)
class LossScale:
    """Loss-scale settings: `value` multiplies the loss before backward; `dynamic` halves it (by `factor`) on
    overflow and grows it after `window` finite steps; a fixed scale never changes."""

    value: float = 1.0
    dynamic: bool = True
    factor: float = 2.0
    window: int = 1000

    def describe(self) -> str:
        if not self.dynamic:
            return f"fixed loss scale {self.value:g} (overflowing steps are skipped)"
        return f"dynamic loss scale {self.value:g} (x{self.factor:g} after {self.window} finite steps, / on overflow)"


def _number(value: Any, key: str, source: Optional[str], integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or (integer and value != int(value)):
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{key} must be {kind}, got {value!r}", source, SCALE_SENSE)
    return float(value)


def parse_loss_scale(scale_sense: Any, source: Optional[str] = None) -> LossScale:
    """`runner_wrapper.scale_sense` of a MindFormers run YAML -> LossScale.

    - absent / empty: dynamic, scale 1.0;
    - a number (MindFormers' bf16/LoRA YAMLs, `scale_sense: 1.0`): a fixed scale;
    - a mapping `{type, loss_scale_value, scale_factor, scale_window}`: dynamic, or fixed when `type` is
      `FixedLossScaleUpdateCell`.
    Raises ConfigError naming `runner_wrapper.scale_sense` (and `source`, the run YAML, when given) for
    negative/zero values, strings, unknown keys or types; entry points can call this while validating inputs.
    """
    if scale_sense is None or (isinstance(scale_sense, Mapping) and not scale_sense):
        return LossScale()
    if isinstance(scale_sense, LossScale):
        return scale_sense
    if not isinstance(scale_sense, Mapping):
        value = _number(scale_sense, "the fixed loss scale", source)
        if not value > 0 or not np.isfinite(value):
            raise ConfigError(
                f"a fixed loss scale must be a finite number > 0, got {scale_sense!r}", source, SCALE_SENSE
            )
        return LossScale(value=value, dynamic=False, factor=1.0, window=1)
    unknown = sorted(str(k) for k in scale_sense if k not in _SCALE_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_SCALE_KEYS)} (or a number: a fixed scale)",
            source,
            SCALE_SENSE,
        )
    kind = scale_sense.get("type", "DynamicLossScaleUpdateCell")
    if kind not in _SCALE_TYPES:
        raise ConfigError(
            f"type must be one of {', '.join(_SCALE_TYPES)}, got {kind!r}", source=source, field=SCALE_SENSE
        )
    value = _number(scale_sense.get("loss_scale_value", 1.0), "loss_scale_value", source)
    factor = _number(scale_sense.get("scale_factor", 2.0), "scale_factor", source)
    window = _number(scale_sense.get("scale_window", 1000), "scale_window", source, integer=True)
    if not (value > 0 and np.isfinite(value)):
        raise ConfigError(
            f"loss_scale_value must be a finite number > 0, got {value!r}", source=source, field=SCALE_SENSE
        )
    if kind == "FixedLossScaleUpdateCell":
        return LossScale(value=value, dynamic=False, factor=1.0, window=1)
    if not (factor > 1 and np.isfinite(factor)):
        raise ConfigError(
            f"scale_factor must be a finite number > 1, got {factor!r}", source=source, field=SCALE_SENSE
        )
    if window < 1:
        raise ConfigError(f"scale_window must be >= 1, got {int(window)}", source=source, field=SCALE_SENSE)
    return LossScale(value=value, dynamic=True, factor=factor, window=int(window))


def lr_schedule(
    base_lr: float, total_steps: int, warmup_steps: int, decay: str, min_lr_ratio: float
) -> np.ndarray:
    """Per-step learning rates `[total_steps]`: linear warmup from 0 (exclusive), then cosine/linear/constant decay
    to `base_lr * min_lr_ratio` at the last step."""
    steps = np.arange(total_steps, dtype=np.float64)
    lrs = np.full(total_steps, base_lr, dtype=np.float64)
    if warmup_steps > 0:
        warm = steps < warmup_steps
        lrs[warm] = base_lr * (steps[warm] + 1) / warmup_steps
    decay_len = max(total_steps - warmup_steps, 1)
    progress = np.clip((steps - warmup_steps) / max(decay_len - 1, 1), 0.0, 1.0)
    floor = base_lr * min_lr_ratio
    after = steps >= warmup_steps
    if decay == "cosine":
        lrs[after] = floor + (base_lr - floor) * 0.5 * (1 + np.cos(np.pi * progress[after]))
    elif decay == "linear":
        lrs[after] = base_lr + (floor - base_lr) * progress[after]
    elif decay != "constant":
        raise ValueError(f"unknown lr decay {decay!r}: use cosine, linear or constant")
    return lrs.astype(np.float32)


class LrTable(LearningRateSchedule):
    """`lrs[min(step, len(lrs) - 1)]`: a per-step learning-rate table that holds its last value past the end.

    MindSpore's own table (`learning_rate=Tensor(lrs)`) gathers `lrs[global_step]` and fails with "Gather ...
    range [0, n), but got n" once a run takes more steps than planned (e.g. a manual `train_step` before
    `train()`, as in the README). The table is the Parameter `learning_rate`, the name MindSpore's table has, so
    optimizer checkpoints keep their layout.
    """

    def __init__(self, lrs: np.ndarray):
        super().__init__()
        self.learning_rate = Parameter(
            Tensor(np.asarray(lrs, np.float32)), "learning_rate", requires_grad=False
        )
        self.last = int(len(lrs)) - 1

    def construct(self, global_step):
        index = ops.minimum(global_step.reshape(-1)[0], self.last)
        return self.learning_rate[index]


def make_optimizer(
    params: List[Parameter],
    lrs: np.ndarray,
    weight_decay: float,
    betas=(0.9, 0.95),
    eps: float = 1e-8,
) -> nn.Optimizer:
    """AdamW over `params` with a per-step lr table (`LrTable`); weight decay on matrices only (not norms or
    scalars); moments `adam_m.<name>` / `adam_v.<name>` in float32.

    All-float32 weights: MindSpore's `nn.AdamWeightDecay` (fused kernel; its moments are float32 clones). Any
    16-bit weight: `FP32StateAdamWeightDecay` (same formula, no bias correction, float32 moments and update),
    since `nn.AdamWeightDecay` would keep fp16/bf16 moments whose v underflows (see trainer/optim.py).
    """
    decay = [p for p in params if len(p.shape) >= 2]
    no_decay = [p for p in params if len(p.shape) < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    all_fp32 = all(p.dtype == ms.float32 for p in params)
    kind = nn.AdamWeightDecay if all_fp32 else FP32StateAdamWeightDecay
    return kind(groups, learning_rate=LrTable(lrs), beta1=betas[0], beta2=betas[1], eps=eps)


def _sum_of_squares(x):
    """sum(x^2) as float32, reducing the last axis first: MindSpore's CPU ReduceSum over *all* axes of a
    [688, 256] tensor took ~0.7 ms (4 ns per element), 20x the last-axis reduction followed by a small one."""
    sq = ops.square(x.astype(ms.float32))
    if sq.ndim > 1:
        sq = ops.reduce_sum(sq, -1)
    return ops.reduce_sum(sq.reshape(-1), -1)


class _ScaledLoss(nn.Cell):
    """(loss * scale, loss, metrics): differentiate the first output only (has_aux)."""

    def __init__(self, loss_fn: nn.Cell):
        super().__init__(auto_prefix=False)
        self.loss_fn = loss_fn

    def construct(self, scale, *inputs):
        loss, metrics = self.loss_fn(*inputs)
        return loss * scale.astype(loss.dtype), loss, metrics


class TrainStep(nn.Cell):
    """`step(*inputs)` -> (loss, metrics, overflow, grad_norm); updates weights unless gradients are non-finite.

    `loss_fn(*inputs)` must return `(loss, metrics)` where metrics is a Tensor (e.g. stacked scalars).
    """

    def __init__(
        self,
        loss_fn: nn.Cell,
        optimizer: nn.Optimizer,
        max_grad_norm: float = 1.0,
        loss_scale: float = 1.0,
        scale_factor: float = 2.0,
        scale_window: int = 1000,
        lrs: Optional[np.ndarray] = None,
        dynamic_scale: bool = True,
    ):
        super().__init__(auto_prefix=False)
        self._lrs = (
            None if lrs is None else [float(x) for x in lrs]
        )  # for logging; the optimizer holds its own copy
        self.scaled = _ScaledLoss(loss_fn)
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad_fn = ms.value_and_grad(self.scaled, None, self.weights, has_aux=True)
        self.max_grad_norm = float(max_grad_norm)
        self.loss_scale = Parameter(
            Tensor(float(loss_scale), ms.float32), name="train_step.loss_scale", requires_grad=False
        )
        self.good_steps = Parameter(Tensor(0, ms.int32), name="train_step.good_steps", requires_grad=False)
        self.scale_factor = float(scale_factor)
        self.scale_window = int(scale_window)
        self.dynamic_scale = bool(dynamic_scale)  # a graph constant: a fixed scale is never assigned
        # Data parallel: average gradients across ranks before the finite check, so every rank takes the same
        # decision and the weights stay identical (what TrainOneStepCell does, without its NPU-only parts).
        mode = ms.get_auto_parallel_context("parallel_mode")
        self.reduce_grads = mode in (ms.ParallelMode.DATA_PARALLEL, ms.ParallelMode.HYBRID_PARALLEL)
        self.grad_reducer = nn.Identity()
        if self.reduce_grads:
            mean = ms.get_auto_parallel_context("gradients_mean")
            degree = ms.get_auto_parallel_context("device_num")
            self.grad_reducer = nn.DistributedGradReducer(self.weights, mean, degree)

    @ms.jit
    def construct(self, *inputs):
        scale = self.loss_scale.value()
        (_, loss, metrics), grads = self.grad_fn(scale, *inputs)
        if self.reduce_grads:
            grads = self.grad_reducer(grads)
        # One pass over the gradients: the squared global norm of the *scaled* gradients gives the finite check
        # (a NaN/inf anywhere makes it non-finite; so does a squared norm beyond float32, which dynamic loss
        # scaling treats as an overflow too), the logged norm, and one factor that unscales and clips. Per-tensor
        # isfinite checks, a second norm inside clip_by_global_norm and a separate unscale pass each cost one
        # kernel launch per parameter: 25% of a small model's step on CPU (bench/bench_train.py, issue 9).
        sq_norm = ops.addn([_sum_of_squares(g) for g in grads])
        grad_norm = ops.sqrt(sq_norm) / scale
        finite = ops.isfinite(sq_norm)
        if finite:
            factor = 1.0 / scale
            if self.max_grad_norm > 0:  # clip_by_global_norm's rule: g * clip / max(norm, clip)
                factor = factor * (self.max_grad_norm / ops.maximum(grad_norm, self.max_grad_norm))
            grads = tuple(g * factor.astype(g.dtype) for g in grads)
            self.optimizer(grads)
            if self.dynamic_scale:
                good = self.good_steps + 1
                grow = good >= self.scale_window
                ops.assign(self.loss_scale, ops.select(grow, scale * self.scale_factor, scale))
                ops.assign(self.good_steps, ops.select(grow, ops.zeros_like(good), good))
        elif self.dynamic_scale:
            ops.assign(self.loss_scale, ops.maximum(scale / self.scale_factor, ops.ones_like(scale)))
            ops.assign(self.good_steps, ops.zeros_like(self.good_steps))
        return loss, metrics, ops.logical_not(finite), grad_norm

    def state_dict(self) -> Dict[str, float]:
        return {"loss_scale": float(self.loss_scale.asnumpy()), "good_steps": int(self.good_steps.asnumpy())}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        ops.assign(self.loss_scale, Tensor(float(state["loss_scale"]), ms.float32))
        ops.assign(self.good_steps, Tensor(int(state["good_steps"]), ms.int32))

    def current_lr(self) -> float:
        """The learning rate the *next* optimiser step will use (the schedule's value at global_step, held at
        the last value past the end, as `LrTable` does in-graph)."""
        if not self._lrs:
            return float("nan")
        step = int(self.optimizer.global_step.asnumpy().reshape(-1)[0])
        return self._lrs[min(step, len(self._lrs) - 1)]


def build_train_step(
    loss_cell: nn.Cell,
    params: List[Parameter],
    peak_lr: float,
    total_steps: int,
    config: Any,
    loss_scale: Any = None,
    name: str = "model",
) -> Tuple[TrainStep, nn.Optimizer, np.ndarray]:
    """Optimizer + TrainStep for one trained model, the same way in every trainer -> (step, optimizer, lrs).

    `config` is a `TrainerConfig` (warmup_steps, lr_decay, min_lr_ratio, weight_decay, adam_beta1/2, adam_eps,
    max_grad_norm); `lrs[total_steps]` is `lr_schedule(peak_lr, ...)`; `loss_scale` is the run YAML's
    `runner_wrapper.scale_sense` (a number, a mapping or None, see `parse_loss_scale`), logged once per model.
    """
    c = config
    scale = parse_loss_scale(loss_scale)
    lrs = lr_schedule(peak_lr, total_steps, c.warmup_steps, c.lr_decay, c.min_lr_ratio)
    optimizer = make_optimizer(params, lrs, c.weight_decay, (c.adam_beta1, c.adam_beta2), c.adam_eps)
    step = TrainStep(
        loss_cell,
        optimizer,
        c.max_grad_norm or 0.0,
        loss_scale=scale.value,
        scale_factor=scale.factor,
        scale_window=scale.window,
        lrs=lrs,
        dynamic_scale=scale.dynamic,
    )
    logger.info(
        "%s: %s; %d optimiser steps, peak lr %g (%s)",
        name,
        scale.describe(),
        total_steps,
        peak_lr,
        c.lr_decay,
    )
    return step, optimizer, lrs
