"""Critic-free RL for language models, in numpy: group advantages (GRPO, Dr. GRPO, RLOO), the generalised
clipped policy loss (clip-higher, three aggregations, token- or sequence-level ratio) and the k3 KL term.

The MindSpore twins live in `mindrlhf/trainer/policy_losses.py` and are tested against these functions, as the
PPO losses are against `ppo_math`. This module never imports mindspore.

Shapes and names as in `ppo_math`: B = batch (G contiguous rows per prompt), T = response positions,
response_mask [B, T] (1 = real response token), logprobs / old_logprobs / ref_logprobs [B, T], scores [B].

Values under mask = 0 never reach a result: they are replaced by 0 *before* any arithmetic (`np.where`), so
padding may hold anything, even inf or NaN (multiplying by the mask would turn inf * 0 into NaN).

References:
    [GRPO]    Shao et al. 2024, "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language
              Models", arXiv:2402.03300 (sections 4.1, eq. 3).
    [DrGRPO]  Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective",
              arXiv:2503.20783 (section 3.1).
    [RLOO]    Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from
              Human Feedback in LLMs", arXiv:2402.14740 (eq. 6); Kool et al. 2019.
    [DAPO]    Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale",
              arXiv:2503.14476 (clip-higher, token-level loss).
    [GSPO]    Zheng et al. 2025, "Group Sequence Policy Optimization", arXiv:2507.18071 (eq. 7).
    [PPO]     Schulman et al. 2017, arXiv:1707.06347.
    [KL]      Schulman 2020, "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

ADVANTAGE_ESTIMATORS = ("grpo", "dr_grpo", "rloo")
"""Names accepted by `group_advantages` (OpenRLHF calls "grpo" `group_norm`)."""

LOSS_AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
"""Names accepted by `aggregate_loss` / `policy_loss` (verl's `loss_agg_mode` names, with underscores)."""

RATIO_LEVELS = ("token", "sequence")
"""Importance ratio per token (PPO, GRPO, DAPO) or one per sequence applied to all its tokens (GSPO)."""


# ----------------------------------------------------------------------------------------------------------------
# Advantages
# ----------------------------------------------------------------------------------------------------------------


def group_advantages(scores: np.ndarray, group_size: int, estimator: str, eps: float = 1e-6) -> np.ndarray:
    """Critic-free advantages from the G scores of each prompt's group. scores: [B] -> [B] float64.

    The G = group_size rows of one prompt are contiguous (rows g*G .. g*G+G-1), and B % G == 0.

        "grpo"     A_i = (s_i - mean_g) / (std_g + eps)      [GRPO] eq. 3 ("outcome supervision")
        "dr_grpo"  A_i = s_i - mean_g                        [DrGRPO]: no std division (its difficulty bias)
        "rloo"     A_i = s_i - (sum_g - s_i) / (G - 1)       [RLOO]: leave-one-out baseline
                       = G / (G - 1) * (s_i - mean_g)

    Conventions, and why:
    - std_g is the *unbiased* (ddof = 1) sample std, eps added to the std (not to the variance) outside the
      square root: TRL (`rewards.view(-1, G).std()`, eps 1e-4), OpenRLHF (`group_norm`, eps 1e-9) and verl
      (`compute_grpo_outcome_advantage`, eps 1e-6) all do this; we take verl's eps as the default.
    - A group whose scores are all equal gets exactly 0 (no learning signal, never NaN): the rounding of the
      group mean would otherwise leave ~1e-17 / (1e-17 + eps) residues.
    - G = 1 is an error for "grpo" (the unbiased std of one sample is undefined) and "rloo" (no other sample
      to form the baseline); verl silently returns A = s for G = 1, which is rarely what a user meant.
      "dr_grpo" with G = 1 is allowed and gives zeros.
    Raises ValueError for a bad estimator, group_size, or B % group_size != 0.
    """
    if estimator not in ADVANTAGE_ESTIMATORS:
        raise ValueError(
            f"unknown advantage estimator {estimator!r}; choose one of {', '.join(ADVANTAGE_ESTIMATORS)}"
        )
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"scores must be [B], got shape {scores.shape}")
    if int(group_size) != group_size or group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size!r}")
    group_size = int(group_size)
    if scores.shape[0] % group_size != 0:
        raise ValueError(
            f"batch of {scores.shape[0]} scores is not a whole number of groups of {group_size} "
            "(num_generations must divide the batch)"
        )
    if group_size == 1 and estimator in ("grpo", "rloo"):
        raise ValueError(
            f"advantage estimator {estimator!r} needs at least 2 samples per prompt (group_size=1); "
            "use num_generations >= 2"
        )
    groups = scores.reshape(-1, group_size)  # (n_groups, G)
    mean = groups.mean(axis=1, keepdims=True)
    if estimator == "grpo":
        advantages = (groups - mean) / (groups.std(axis=1, ddof=1, keepdims=True) + eps)
    elif estimator == "dr_grpo":
        advantages = groups - mean
    else:  # rloo
        advantages = groups - (groups.sum(axis=1, keepdims=True) - groups) / (group_size - 1)
    constant = groups.max(axis=1) == groups.min(axis=1)
    advantages[constant] = 0.0
    return advantages.reshape(-1)


# ----------------------------------------------------------------------------------------------------------------
# Loss aggregation
# ----------------------------------------------------------------------------------------------------------------


def aggregate_loss(
    loss_mat: np.ndarray,
    response_mask: np.ndarray,
    loss_agg: str = "token_mean",
    max_len: Optional[int] = None,
) -> float:
    """Reduce a per-token loss [B, T] over the real tokens to one number. Linear in `loss_mat`, so the policy
    term and GRPO's beta * k3 term can be aggregated separately and added.

        "token_mean"               sum(L * m) / sum(m)                         [DAPO] eq. 8 (token-level)
        "seq_mean_token_mean"      mean_i( sum_t(L * m)_i / sum_t(m)_i )       [GRPO] eq. 3 (1/G sum 1/|o_i|)
        "seq_mean_token_sum_norm"  sum(L * m) / (B * max_len)                  [DrGRPO] (constant normaliser)

    max_len defaults to T (the padded response length, i.e. max_new_tokens), as TRL's `dr_grpo` loss uses
    `max_completion_length` and verl's `seq-mean-token-sum-norm` the response length. A row or batch without
    real tokens contributes 0 (TRL's `clamp(min=1)`); rows without tokens still count in the mean over B
    in "seq_mean_token_mean" (as TRL, e.g. completions masked out by `mask_truncated_completions`).
    """
    if loss_agg not in LOSS_AGGREGATIONS:
        raise ValueError(f"unknown loss_agg {loss_agg!r}; choose one of {', '.join(LOSS_AGGREGATIONS)}")
    mask = np.asarray(response_mask, dtype=np.float64)
    if mask.ndim != 2:
        raise ValueError(f"response_mask must be [B, T], got shape {mask.shape}")
    loss_mat = np.where(mask > 0, np.asarray(loss_mat, dtype=np.float64), 0.0) * mask
    if loss_agg == "token_mean":
        return float(loss_mat.sum() / max(mask.sum(), 1.0))
    if loss_agg == "seq_mean_token_mean":
        return float(np.mean(loss_mat.sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)))
    norm = mask.shape[1] if max_len is None else max_len
    if not norm > 0:
        raise ValueError(f"max_len must be > 0, got {max_len}")
    return float(loss_mat.sum() / (mask.shape[0] * norm))


# ----------------------------------------------------------------------------------------------------------------
# Policy loss
# ----------------------------------------------------------------------------------------------------------------


class PolicyLossOutput(NamedTuple):
    """What `policy_loss` returns: a tuple whose first two items are (loss, clipfrac), as `ppo_math`."""

    loss: float
    clipfrac: float
    clipfrac_low: float
    clipfrac_high: float
    approx_kl: float


def policy_loss(
    logprobs: np.ndarray,
    old_logprobs: np.ndarray,
    advantages: np.ndarray,
    mask: np.ndarray,
    clip_low: float = 0.2,
    clip_high: Optional[float] = None,
    loss_agg: str = "token_mean",
    ratio_level: str = "token",
    max_len: Optional[int] = None,
) -> PolicyLossOutput:
    """Clipped surrogate loss for PPO / GRPO / Dr. GRPO / DAPO / GSPO, as a loss to minimise.

    logprobs, old_logprobs, mask: [B, T]; advantages: [B, T] (PPO, per token) or [B] (critic-free, one per
    response, broadcast over its tokens). With the defaults it equals `ppo_math.policy_loss(..., cliprange=0.2)`.

        log_r   = logprobs - old_logprobs                                  ratio_level "token"   ([PPO])
        log_r_i = mean over real tokens t of (logprobs - old_logprobs)_it  ratio_level "sequence" ([GSPO] eq. 7,
                                                                           the same value on every token of i)
        r       = exp(log_r)
        L_t     = max(-A * r, -A * clip(r, 1 - clip_low, 1 + clip_high))   ([PPO] eq. 7; [DAPO] clip-higher,
                                                                           clip_high defaults to clip_low)
        loss    = aggregate_loss(L, mask, loss_agg, max_len)

    Metrics (token-level masked means, whatever `loss_agg` is, so they compare across settings):
        clipfrac      fraction of real tokens where the clipped branch is strictly larger (its gradient is cut);
                      `ppo_math`'s definition, equal to TRL's `is_region_clipped` (A > 0 and r > 1 + clip_high,
                      or A < 0 and r < 1 - clip_low)
        clipfrac_low  the part of it with r < 1 (TRL `clip_ratio/low_mean`), clipfrac_high the part with r > 1
        approx_kl     masked mean of (r_t - 1) - log r_t with the *token* ratio: k3 estimate of KL(old || new)
                      ([KL], as cleanrl), also for "sequence" ratios
    Values under mask = 0 (in any input) do not affect any output. Returns a `PolicyLossOutput` of floats.
    """
    clip_high = clip_low if clip_high is None else clip_high
    if not (0.0 <= clip_low < 1.0) or not clip_high >= 0.0:
        raise ValueError(
            f"need 0 <= clip_low < 1 and clip_high >= 0, got clip_low={clip_low}, clip_high={clip_high}"
        )
    if ratio_level not in RATIO_LEVELS:
        raise ValueError(f"unknown ratio_level {ratio_level!r}; choose one of {', '.join(RATIO_LEVELS)}")
    mask = np.asarray(mask, dtype=np.float64)
    real = mask > 0
    token_log_ratio = np.where(
        real, np.asarray(logprobs, np.float64) - np.asarray(old_logprobs, np.float64), 0.0
    )
    if ratio_level == "sequence":
        seq_log_ratio = token_log_ratio.sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)  # [B]
        log_ratio = np.broadcast_to(seq_log_ratio[:, None], mask.shape)
    else:
        log_ratio = token_log_ratio
    ratio = np.exp(log_ratio)
    advantages = np.asarray(advantages, dtype=np.float64).reshape(mask.shape[0], -1)  # [B] -> [B, 1]
    advantages = np.where(real, advantages, 0.0)
    unclipped = -advantages * ratio
    clipped = -advantages * np.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = aggregate_loss(np.maximum(unclipped, clipped), mask, loss_agg, max_len)
    is_clipped = clipped > unclipped
    token_mean = _token_mean(mask)
    return PolicyLossOutput(
        loss=loss,
        clipfrac=token_mean(is_clipped),
        clipfrac_low=token_mean(is_clipped & (ratio < 1.0)),
        clipfrac_high=token_mean(is_clipped & (ratio > 1.0)),
        approx_kl=token_mean(np.expm1(token_log_ratio) - token_log_ratio),
    )


def _token_mean(mask: np.ndarray):
    count = max(float(mask.sum()), 1.0)
    return lambda x: float(np.where(mask > 0, x, 0.0).sum() / count)


# ----------------------------------------------------------------------------------------------------------------
# KL term in the loss
# ----------------------------------------------------------------------------------------------------------------


def kl_in_loss(logprobs: np.ndarray, ref_logprobs: np.ndarray) -> np.ndarray:
    """Per-token k3 estimate of KL(pi || pi_ref), the term GRPO adds to its loss as beta * k3 ([GRPO] eq. 4):

        k3 = exp(ref_logprobs - logprobs) - (ref_logprobs - logprobs) - 1          >= 0, unbiased ([KL])

    logprobs, ref_logprobs: [B, T] -> [B, T] float64, unmasked: aggregate it with `aggregate_loss` under the
    policy loss's mask and `loss_agg`, as TRL adds `beta * per_token_kl` to the per-token loss before its
    aggregation. verl's `low_var_kl` also clamps k3 to [-10, 10]; we do not (a large KL should show).
    It is `ppo_math.kl_penalty(..., "k3")`, named for its role: a loss term with gradient, not a reward.
    """
    d = np.asarray(ref_logprobs, dtype=np.float64) - np.asarray(logprobs, dtype=np.float64)
    return np.expm1(d) - d
