"""PPO for language models, in numpy: KL-shaped rewards, GAE, whitening, reference losses.

The state kept between iterations (KL controllers, score normaliser) is `mindrlhf.algorithms.controllers`,
re-exported here so `ppo_math.make_kl_controller`, `ppo_math.ScoreNormalizer`, ... keep working.

This module is the specification the MindSpore loss cells (`mindrlhf/trainer/losses.py`) are tested against,
and it runs as-is between generation and optimisation (rewards, advantages, controllers, score statistics).
It never imports mindspore.

Conventions (the same names are used in every file):
    B = batch (one row per prompt/response pair), T = response positions, V = vocabulary.
    response_mask [B, T]: 1 for a real response token (including the EOS that ended it), 0 for padding after it.
        Each row is a prefix of ones: a response may end early (EOS) and may be a single token.
    logprobs / old_logprobs / ref_logprobs [B, T]: log pi(token_t | prompt, tokens_<t) of the sampled tokens,
        under the current policy, the policy that sampled them, and the frozen reference (SFT) model.
    values / old_values [B, T]: critic's V(s_t), the value of the state just before token t is emitted.
    scores [B]: one reward-model score per response.
    rewards, advantages, returns [B, T]: per token, zero outside the response mask.

Every "masked mean" is a token-level mean over the whole batch: sum(x * mask) / sum(mask). An all-zero mask
gives 0 (the MindSpore version must be jit-safe, and both must agree).

References:
    [PPO]  Schulman et al. 2017, "Proximal Policy Optimization Algorithms", arXiv:1707.06347.
    [GAE]  Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation",
           arXiv:1506.02438.
    [Z19]  Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", arXiv:1909.08593.
    [KL]   Schulman 2020, "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from mindrlhf.algorithms.controllers import (  # noqa: F401  (re-exported: ppo_math.X)
    AdaptiveKLController,
    FixedKLController,
    RunningMeanStd,
    ScoreNormalizer,
    make_kl_controller,
)

KL_ESTIMATORS = ("k1", "k2", "k3", "abs", "mse")
"""Names accepted by `kl_penalty` / `compute_rewards`; 'mse' is TRL's name for k2."""


# ----------------------------------------------------------------------------------------------------------------
# Masked statistics
# ----------------------------------------------------------------------------------------------------------------


def masked_sum(x: np.ndarray, mask: np.ndarray, axis: Optional[int] = None) -> np.ndarray:
    """sum(x * mask) over `axis` (all axes when None). x, mask: same shape, e.g. [B, T]."""
    return np.sum(np.asarray(x, dtype=np.float64) * mask, axis=axis)


def masked_mean(x: np.ndarray, mask: np.ndarray, axis: Optional[int] = None) -> np.ndarray:
    """Mean of x over positions where mask == 1: sum(x * mask) / max(sum(mask), 1).

    x, mask: [B, T] (any equal shapes). axis=None gives one token-level mean over the batch (a scalar); axis=1
    gives one mean per row [B]. An empty mask gives 0 rather than NaN.
    """
    count = np.sum(np.asarray(mask, dtype=np.float64), axis=axis)
    return masked_sum(x, mask, axis) / np.maximum(count, 1.0)


def masked_var(x: np.ndarray, mask: np.ndarray, unbiased: bool = True) -> float:
    """Variance of the masked-in entries of x: masked_mean((x - mean)^2) * n / (n - 1) when `unbiased`.

    x, mask: [B, T]; returns a scalar over all masked-in tokens. Bessel's correction is skipped when n <= 1
    (one token has variance 0 either way), and an empty mask gives 0.
    """
    mean = masked_mean(x, mask)
    var = masked_mean((np.asarray(x, dtype=np.float64) - mean) ** 2, mask)
    n = float(np.sum(mask))
    if unbiased and n > 1:
        var = var * n / (n - 1.0)
    return float(var)


def masked_whiten(x: np.ndarray, mask: np.ndarray, shift_mean: bool = True, eps: float = 1e-8) -> np.ndarray:
    """Whiten x over the masked-in tokens of the whole batch: (x - mean) / sqrt(var + eps).

    x, mask: [B, T]. mean and (unbiased) var are taken over response tokens only, so padding cannot shift them.
    With `shift_mean=False` the mean is added back (scale only), as TRL does for value targets.
    Returns [B, T], zero outside the mask. Used for advantage normalisation ([PPO] implementations, cleanrl):
    whiten after `gae_advantages`, whose returns (the critic targets) use the raw advantages.
    """
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=True)
    whitened = (np.asarray(x, dtype=np.float64) - mean) / math.sqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


# ----------------------------------------------------------------------------------------------------------------
# KL penalty and rewards
# ----------------------------------------------------------------------------------------------------------------


def kl_penalty(logprobs: np.ndarray, ref_logprobs: np.ndarray, estimator: str = "k1") -> np.ndarray:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi. Inputs and output: [B, T].

    With log_ratio = logprobs - ref_logprobs = log pi(x)/pi_ref(x) and x ~ pi ([KL]):
        k1  = log_ratio                          unbiased, can be negative per token
        k2  = 0.5 * log_ratio^2                  ('mse'), biased, >= 0
        k3  = exp(-log_ratio) - 1 + log_ratio    unbiased, >= 0 ((r - 1) - log r with r = pi_ref / pi)
        abs = |log_ratio|
    `logprobs` must be the log-probabilities of the distribution the tokens were sampled from (same
    temperature / top-k / top-p processing), otherwise none of these estimates KL(pi || pi_ref).
    """
    log_ratio = np.asarray(logprobs, dtype=np.float64) - np.asarray(ref_logprobs, dtype=np.float64)
    if estimator == "k1":
        return log_ratio
    if estimator in ("k2", "mse"):
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return np.expm1(-log_ratio) + log_ratio
    if estimator == "abs":
        return np.abs(log_ratio)
    raise ValueError(f"unknown kl_estimator {estimator!r}; choose one of {', '.join(KL_ESTIMATORS)}")


def last_token_index(response_mask: np.ndarray) -> np.ndarray:
    """Index of the last real response token of each row. response_mask: [B, T] -> [B] int.

    Raises ValueError for a row without any response token (every response has at least its first token).
    """
    mask = np.asarray(response_mask)
    if mask.ndim != 2:
        raise ValueError(f"response_mask must be [B, T], got shape {mask.shape}")
    has_token = mask.any(axis=1)
    if not has_token.all():
        rows = np.flatnonzero(~has_token).tolist()
        raise ValueError(f"response_mask rows {rows} have no response token")
    t = mask.shape[1]
    return t - 1 - np.argmax(mask[:, ::-1] != 0, axis=1)


def compute_rewards(
    logprobs: np.ndarray,
    ref_logprobs: np.ndarray,
    scores: np.ndarray,
    response_mask: np.ndarray,
    kl_coef: float,
    kl_estimator: str = "k1",
) -> np.ndarray:
    """Per-token rewards [B, T] for PPO-RLHF ([Z19] eq. 2; InstructGPT):

        r_t = -kl_coef * KL_t              on every response token
        r_t += score                       on the last real response token (t = last_token_index)

    logprobs, ref_logprobs, response_mask: [B, T]; scores: [B]. KL_t from `kl_penalty(kl_estimator)`. A policy
    that raises logprobs above the reference lowers its reward. Zero outside the mask.
    """
    mask = np.asarray(response_mask, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape[0] != mask.shape[0]:
        raise ValueError(f"scores has {scores.shape[0]} entries for a batch of {mask.shape[0]}")
    kl = kl_penalty(logprobs, ref_logprobs, kl_estimator)
    rewards = -kl_coef * kl * mask
    rewards[np.arange(mask.shape[0]), last_token_index(mask)] += scores
    return rewards


# ----------------------------------------------------------------------------------------------------------------
# Advantages
# ----------------------------------------------------------------------------------------------------------------


def gae_advantages(
    rewards: np.ndarray,
    values: np.ndarray,
    response_mask: np.ndarray,
    gamma: float,
    lam: float,
) -> Tuple[np.ndarray, np.ndarray]:
    """Generalized Advantage Estimation ([GAE] eq. 16). rewards, values, response_mask: [B, T].

        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1}
        returns = A + V                      (the critic's regression target, TD(lambda) return)

    Values outside the mask are treated as 0, and the value after the last real token is 0: the episode ends
    there (no bootstrap). Returns (advantages, returns), each [B, T] and zero outside the mask.
    A backward loop over T, vectorised over B: 0.9 ms at B=8, T=128 and 8 ms at B=64, T=1024 on this CPU; the
    closed form A = delta @ [(gamma*lam)^(s-t)]_{s>=t} is faster for short T but O(T^2) (19 ms at T=1024).
    """
    mask = np.asarray(response_mask, dtype=np.float64)
    rewards = np.asarray(rewards, dtype=np.float64) * mask
    values = np.asarray(values, dtype=np.float64) * mask
    _, t_len = mask.shape
    advantages = np.zeros_like(values)
    last_gae = np.zeros(mask.shape[0])
    for t in reversed(range(t_len)):
        next_values = values[:, t + 1] if t + 1 < t_len else 0.0
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        # Multiplying by the mask keeps A = 0 on padding, so the step after the last real token adds nothing.
        last_gae = (delta + gamma * lam * last_gae) * mask[:, t]
        advantages[:, t] = last_gae
    returns = (advantages + values) * mask
    return advantages, returns


# ----------------------------------------------------------------------------------------------------------------
# Reference losses (the MindSpore versions in trainer/losses.py must equal these)
# ----------------------------------------------------------------------------------------------------------------


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable log-softmax along `axis`."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - np.max(logits, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def logprobs_from_logits(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """log softmax(logits / temperature)[labels]. logits: [B, T, V], labels: [B, T] int -> [B, T].

    Use the same temperature as sampling, so that these are the log-probs of the distribution sampled from.
    """
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=-1)
    return np.take_along_axis(logp, np.asarray(labels)[..., None].astype(np.int64), axis=-1)[..., 0]


def entropy_from_logits(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Entropy of softmax(logits / temperature) per position: logsumexp(z) - sum(softmax(z) * z).

    logits: [B, T, V] -> [B, T].
    """
    logp = log_softmax(np.asarray(logits, dtype=np.float64) / temperature, axis=-1)
    return -np.sum(np.exp(logp) * logp, axis=-1)


def policy_loss(
    logprobs: np.ndarray,
    old_logprobs: np.ndarray,
    advantages: np.ndarray,
    response_mask: np.ndarray,
    cliprange: float,
) -> Tuple[float, float, float]:
    """PPO clipped surrogate ([PPO] eq. 7), as a loss to minimise. All inputs [B, T].

        ratio    = exp(logprobs - old_logprobs)
        loss     = masked_mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)))
        clipfrac = masked_mean(clipped term > unclipped term)     (tokens whose gradient is cut off)
        approx_kl = masked_mean((ratio - 1) - log ratio)          (k3 estimate of KL(old || new), as cleanrl)

    Returns (loss, clipfrac, approx_kl) as floats.
    """
    log_ratio = np.asarray(logprobs, dtype=np.float64) - np.asarray(old_logprobs, dtype=np.float64)
    ratio = np.exp(log_ratio)
    advantages = np.asarray(advantages, dtype=np.float64)
    unclipped = -advantages * ratio
    clipped = -advantages * np.clip(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(np.maximum(unclipped, clipped), response_mask)
    clipfrac = masked_mean((clipped > unclipped).astype(np.float64), response_mask)
    approx_kl = masked_mean(np.expm1(log_ratio) - log_ratio, response_mask)
    return float(loss), float(clipfrac), float(approx_kl)


def value_loss(
    values: np.ndarray,
    old_values: np.ndarray,
    returns: np.ndarray,
    response_mask: np.ndarray,
    cliprange_value: float,
) -> Tuple[float, float]:
    """Clipped value loss (PPO2 / cleanrl / TRL form). All inputs [B, T].

        v_clipped = old_values + clip(values - old_values, -eps_v, eps_v)
        loss      = 0.5 * masked_mean(max((values - R)^2, (v_clipped - R)^2))
        clipfrac  = masked_mean(|values - old_values| > eps_v  and  (v_clipped - R)^2 > (values - R)^2)

    The 0.5 makes d loss / d V = (V - R) / n on unclipped tokens; the trainer multiplies the loss by vf_coef.
    The max keeps the more pessimistic error, so a critic step cannot move V further than eps_v from
    old_values to reduce the loss. Returns (loss, clipfrac) as floats.
    """
    values = np.asarray(values, dtype=np.float64)
    old_values = np.asarray(old_values, dtype=np.float64)
    returns = np.asarray(returns, dtype=np.float64)
    v_clipped = old_values + np.clip(values - old_values, -cliprange_value, cliprange_value)
    err_unclipped = (values - returns) ** 2
    err_clipped = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(np.maximum(err_unclipped, err_clipped), response_mask)
    # Inside the range old + (values - old) can differ from values in the last bit: count only real clips.
    clipped = (np.abs(values - old_values) > cliprange_value) & (err_clipped > err_unclipped)
    clipfrac = masked_mean(clipped.astype(np.float64), response_mask)
    return float(loss), float(clipfrac)


def ptx_loss(logits: np.ndarray, input_ids: np.ndarray, loss_mask: np.ndarray) -> float:
    """Pre-training (language-modelling) loss mixed into PPO (InstructGPT's PPO-ptx): masked next-token NLL.

    logits: [B, T, V] at input positions; input_ids, loss_mask: [B, T]. loss_mask[t] = 1 means input_ids[t] is a
    target, predicted from the logits at position t - 1; loss_mask[:, 0] is therefore ignored.
        loss = -masked_mean(log softmax(logits[:, :-1])[input_ids[:, 1:]], loss_mask[:, 1:])
    """
    logp = logprobs_from_logits(np.asarray(logits)[:, :-1], np.asarray(input_ids)[:, 1:])
    return float(-masked_mean(logp, np.asarray(loss_mask, dtype=np.float64)[:, 1:]))


def explained_variance(values: np.ndarray, returns: np.ndarray, response_mask: np.ndarray) -> float:
    """1 - Var[R - V] / Var[R] over response tokens (1 = perfect critic, 0 = no better than a constant).

    values, returns, response_mask: [B, T]. NaN when the returns have zero variance (as cleanrl).
    """
    var_returns = masked_var(returns, response_mask, unbiased=False)
    if var_returns == 0.0:
        return float("nan")
    residual = np.asarray(returns, dtype=np.float64) - np.asarray(values, dtype=np.float64)
    return 1.0 - masked_var(residual, response_mask, unbiased=False) / var_returns
