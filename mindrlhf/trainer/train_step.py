"""The one optimiser step used by every trainer: loss scaling, overflow skip, global-norm clipping, AdamW.

MindSpore's `TrainOneStepWithLossScaleCell` needs NPU float-status ops and fails on CPU, so the loss scale is
kept here as two Parameters and updated in-graph with MindFormers' `DynamicLossScaleUpdateCell` semantics:
on non-finite gradients the update is skipped and the scale is divided by `scale_factor` (not below 1); after
`scale_window` finite steps in a row it is multiplied by `scale_factor`.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops


def lr_schedule(base_lr: float, total_steps: int, warmup_steps: int, decay: str, min_lr_ratio: float) -> np.ndarray:
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


def make_optimizer(
    params: List[Parameter],
    lrs: np.ndarray,
    weight_decay: float,
    betas=(0.9, 0.95),
    eps: float = 1e-8,
) -> nn.AdamWeightDecay:
    """AdamW over `params` with a per-step lr array; weight decay on matrices only (not norms or scalars)."""
    decay = [p for p in params if len(p.shape) >= 2]
    no_decay = [p for p in params if len(p.shape) < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return nn.AdamWeightDecay(groups, learning_rate=Tensor(lrs), beta1=betas[0], beta2=betas[1], eps=eps)


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
    ):
        super().__init__(auto_prefix=False)
        self._lrs = None if lrs is None else [float(x) for x in lrs]  # for logging; the optimizer holds its own copy
        self.scaled = _ScaledLoss(loss_fn)
        self.optimizer = optimizer
        self.weights = optimizer.parameters
        self.grad_fn = ms.value_and_grad(self.scaled, None, self.weights, has_aux=True)
        self.max_grad_norm = float(max_grad_norm)
        self.loss_scale = Parameter(Tensor(float(loss_scale), ms.float32), name="train_step.loss_scale", requires_grad=False)
        self.good_steps = Parameter(Tensor(0, ms.int32), name="train_step.good_steps", requires_grad=False)
        self.scale_factor = float(scale_factor)
        self.scale_window = int(scale_window)
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
            good = self.good_steps + 1
            grow = good >= self.scale_window
            ops.assign(self.loss_scale, ops.select(grow, scale * self.scale_factor, scale))
            ops.assign(self.good_steps, ops.select(grow, ops.zeros_like(good), good))
        else:
            ops.assign(self.loss_scale, ops.maximum(scale / self.scale_factor, ops.ones_like(scale)))
            ops.assign(self.good_steps, ops.zeros_like(self.good_steps))
        return loss, metrics, ops.logical_not(finite), grad_norm

    def state_dict(self) -> Dict[str, float]:
        return {"loss_scale": float(self.loss_scale.asnumpy()), "good_steps": int(self.good_steps.asnumpy())}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        ops.assign(self.loss_scale, Tensor(float(state["loss_scale"]), ms.float32))
        ops.assign(self.good_steps, Tensor(int(state["good_steps"]), ms.int32))

    def current_lr(self) -> float:
        """The learning rate the *next* optimiser step will use (the schedule's value at global_step)."""
        if not self._lrs:
            return float("nan")
        step = int(self.optimizer.global_step.asnumpy().reshape(-1)[0])
        return self._lrs[min(step, len(self._lrs) - 1)]
