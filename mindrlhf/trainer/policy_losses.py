"""Critic-free policy losses and DPO in MindSpore: the twins of `mindrlhf.algorithms.grpo_math` / `dpo_math`.

Usable in PyNative, inside `ms.jit` and in GRAPH_MODE cells; all math in float32. Variants (aggregation, ratio
level, DPO loss type) are chosen once, when the cell is built: the cell keeps the chosen plain function as an
attribute, so the compiled graph holds only that variant and no string is compared per step.
`tests/test_policy_losses.py` checks every variant against the numpy reference on random inputs, under
`ms.jit`, and its gradient against finite differences of the numpy reference.

Shapes: B = batch, T = response positions; mask [B, T] is 1 on real response tokens. Values under mask = 0 are
replaced by 0 before any arithmetic (`mint.where`), so padding holding inf or NaN cannot leak (x * 0 would).
"""

from __future__ import annotations

from typing import Optional, Tuple

import mindspore as ms
from mindspore import Tensor, mint, nn, ops

from mindrlhf.algorithms.dpo_math import check_dpo_options
from mindrlhf.algorithms.grpo_math import LOSS_AGGREGATIONS, RATIO_LEVELS
from mindrlhf.trainer.losses import masked_mean

POLICY_LOSS_METRICS = ("clipfrac", "clipfrac_low", "clipfrac_high", "approx_kl")
"""Names of the items `PolicyLoss` returns after the loss, in order (`grpo_math.PolicyLossOutput` fields)."""

DPO_OUTPUTS = ("losses", "chosen_rewards", "rejected_rewards")
"""Names of the items `DPOLoss` returns, in order."""


def _real(x: Tensor, mask: Tensor) -> Tensor:
    """x where mask > 0, else 0 (a select, so inf/NaN padding cannot reach the result or the gradient)."""
    return mint.where(mask > 0, x, ops.zeros_like(x))


# ------------------------------------------------------------------------------------------------- aggregations
# Each: (loss_mat [B, T], mask [B, T], max_len) -> scalar; see grpo_math.aggregate_loss for the conventions.


def _token_mean(loss_mat: Tensor, mask: Tensor, max_len: int) -> Tensor:
    """DAPO: sum(L m) / max(sum(m), 1)."""
    return masked_mean(_real(loss_mat, mask), mask)


def _seq_mean_token_mean(loss_mat: Tensor, mask: Tensor, max_len: int) -> Tensor:
    """GRPO paper: mean over rows of each row's token mean (a row without tokens counts as 0)."""
    return mint.mean(masked_mean(_real(loss_mat, mask), mask, axis=1))


def _seq_mean_token_sum_norm(loss_mat: Tensor, mask: Tensor, max_len: int) -> Tensor:
    """Dr. GRPO: sum(L m) / (B * max_len); max_len 0 means T."""
    norm = loss_mat.shape[1] if max_len == 0 else max_len
    row_sums = mint.sum(
        _real(loss_mat, mask) * mask.astype(loss_mat.dtype), dim=1
    )  # 2-D reduction, see rows()
    return mint.sum(row_sums) / (loss_mat.shape[0] * norm)


_AGGREGATIONS = {
    "token_mean": _token_mean,
    "seq_mean_token_mean": _seq_mean_token_mean,
    "seq_mean_token_sum_norm": _seq_mean_token_sum_norm,
}


def _token_log_ratio(token_log_ratio: Tensor, mask: Tensor) -> Tensor:
    """PPO / GRPO: one ratio per token. [B, T] -> [B, T]."""
    return token_log_ratio


def _sequence_log_ratio(token_log_ratio: Tensor, mask: Tensor) -> Tensor:
    """GSPO: the mean log-ratio over a row's real tokens, shared by its tokens. [B, T] -> [B, 1]."""
    return masked_mean(token_log_ratio, mask, axis=1).reshape(-1, 1)


_RATIO_LEVELS = {"token": _token_log_ratio, "sequence": _sequence_log_ratio}


class LossAggregation(nn.Cell):
    """Reduce a per-token loss [B, T] to a scalar by one of `LOSS_AGGREGATIONS`, chosen here.

    The trainer uses the policy loss's instance for GRPO's beta * k3 term too (aggregation is linear).
    """

    def __init__(self, loss_agg: str = "token_mean", max_len: Optional[int] = None):
        super().__init__()
        if loss_agg not in LOSS_AGGREGATIONS:
            raise ValueError(f"unknown loss_agg {loss_agg!r}; choose one of {', '.join(LOSS_AGGREGATIONS)}")
        if max_len is not None and not max_len > 0:
            raise ValueError(f"max_len must be > 0, got {max_len}")
        self.loss_agg = loss_agg
        self.max_len = 0 if max_len is None else int(max_len)
        self.aggregate = _AGGREGATIONS[loss_agg]

    def construct(self, loss_mat: Tensor, mask: Tensor) -> Tensor:
        return self.aggregate(loss_mat, mask, self.max_len)


class PolicyLoss(nn.Cell):
    """Clipped surrogate loss for PPO / GRPO / Dr. GRPO / DAPO / GSPO; `grpo_math.policy_loss` in MindSpore.

        log_r = logprobs - old_logprobs (per token), or its mean over the row's real tokens ("sequence", GSPO)
        L_t   = max(-A exp(log_r), -A clip(exp(log_r), 1 - clip_low, 1 + clip_high))
        loss  = aggregation(L, mask)

    construct(logprobs [B, T], old_logprobs [B, T], advantages [B, T] or [B], mask [B, T]) returns
    (loss, clipfrac, clipfrac_low, clipfrac_high, approx_kl), scalars; the metric names are
    `POLICY_LOSS_METRICS`, and the metrics carry no gradient. Defaults give `losses.policy_loss(..., 0.2)`.
    """

    def __init__(
        self,
        clip_low: float = 0.2,
        clip_high: Optional[float] = None,
        loss_agg: str = "token_mean",
        ratio_level: str = "token",
        max_len: Optional[int] = None,
    ):
        super().__init__()
        clip_high = clip_low if clip_high is None else clip_high
        if not (0.0 <= clip_low < 1.0) or not clip_high >= 0.0:
            raise ValueError(
                f"need 0 <= clip_low < 1 and clip_high >= 0, got clip_low={clip_low}, clip_high={clip_high}"
            )
        if ratio_level not in RATIO_LEVELS:
            raise ValueError(f"unknown ratio_level {ratio_level!r}; choose one of {', '.join(RATIO_LEVELS)}")
        self.lower = 1.0 - float(clip_low)
        self.upper = 1.0 + float(clip_high)
        self.ratio_level = ratio_level
        self.log_ratio_of = _RATIO_LEVELS[ratio_level]
        self.aggregation = LossAggregation(loss_agg, max_len)

    def construct(
        self, logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        real = mask > 0
        token_log_ratio = _real(logprobs - old_logprobs, mask)
        ratio = mint.exp(self.log_ratio_of(token_log_ratio, mask))  # [B, T] or [B, 1]
        advantages = _real(
            advantages.reshape(mask.shape[0], -1) + ops.zeros_like(logprobs), mask
        )  # [B] -> [B, T]
        unclipped = -advantages * ratio
        clipped = -advantages * mint.clamp(ratio, self.lower, self.upper)
        loss = self.aggregation(mint.maximum(unclipped, clipped), mask)
        is_clipped = ops.stop_gradient(mint.logical_and(mint.gt(clipped, unclipped), real))
        low = mint.logical_and(is_clipped, mint.lt(ops.stop_gradient(ratio), 1.0))
        high = mint.logical_and(is_clipped, mint.gt(ops.stop_gradient(ratio), 1.0))
        token_log_ratio = ops.stop_gradient(token_log_ratio)
        return (
            loss,
            masked_mean(is_clipped.astype(ms.float32), mask),
            masked_mean(low.astype(ms.float32), mask),
            masked_mean(high.astype(ms.float32), mask),
            masked_mean(mint.expm1(token_log_ratio) - token_log_ratio, mask),
        )


def kl_in_loss(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """k3 = exp(ref - logp) - (ref - logp) - 1 per token, [B, T] -> [B, T] (`grpo_math.kl_in_loss`).

    Differentiable in logprobs (d k3 / d logp = 1 - exp(ref - logp)); aggregate it with the policy loss's
    `LossAggregation` and add beta times it to the loss (GRPO, Shao et al. 2024 eq. 4).
    """
    d = ref_logprobs - logprobs
    return mint.expm1(d) - d


# ---------------------------------------------------------------------------------------------------------- DPO


def _log_sigmoid(x: Tensor) -> Tensor:
    """log sigmoid(x) = min(x, 0) - log1p(exp(-|x|)), overflow-free (no LogSigmoid kernel on CPU)."""
    return mint.clamp(x, max=0.0) - mint.log1p(mint.exp(-mint.abs(x)))


def _dpo_sigmoid(h: Tensor, beta: float, label_smoothing: float) -> Tensor:
    """DPO (Rafailov et al. 2023) with cDPO label smoothing: -ls(beta h)(1 - ls) - ls(-beta h) ls."""
    return -_log_sigmoid(beta * h) * (1.0 - label_smoothing) - _log_sigmoid(-beta * h) * label_smoothing


def _dpo_ipo(h: Tensor, beta: float, label_smoothing: float) -> Tensor:
    """IPO (Azar et al. 2023): (h - 1 / (2 beta))^2."""
    return mint.square(h - 1.0 / (2.0 * beta))


def _dpo_hinge(h: Tensor, beta: float, label_smoothing: float) -> Tensor:
    """SLiC hinge (Zhao et al. 2023): relu(1 - beta h)."""
    return mint.nn.functional.relu(1.0 - beta * h)


_DPO_LOSSES = {"sigmoid": _dpo_sigmoid, "ipo": _dpo_ipo, "hinge": _dpo_hinge}


class DPOLoss(nn.Cell):
    """`dpo_math.dpo_loss` in MindSpore (TRL's contract), the loss type chosen here.

    construct(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps), each [B]
    summed response log-probs, returns (losses [B], chosen_rewards [B], rejected_rewards [B]) (`DPO_OUTPUTS`);
    rewards = beta * (policy - reference) carry no gradient. The trainer takes losses.mean().
    """

    def __init__(self, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0):
        super().__init__()
        check_dpo_options(beta, loss_type, label_smoothing)
        self.beta = float(beta)
        self.label_smoothing = float(label_smoothing)
        self.loss_type = loss_type
        self.loss_of_margin = _DPO_LOSSES[loss_type]

    def construct(
        self,
        policy_chosen_logps: Tensor,
        policy_rejected_logps: Tensor,
        ref_chosen_logps: Tensor,
        ref_rejected_logps: Tensor,
    ) -> Tuple[Tensor, Tensor, Tensor]:
        h = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps - ref_rejected_logps)
        losses = self.loss_of_margin(h, self.beta, self.label_smoothing)
        chosen_rewards = ops.stop_gradient(self.beta * (policy_chosen_logps - ref_chosen_logps))
        rejected_rewards = ops.stop_gradient(self.beta * (policy_rejected_logps - ref_rejected_logps))
        return losses, chosen_rewards, rejected_rewards
