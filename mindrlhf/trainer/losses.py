"""PPO losses in MindSpore, usable in PyNative, inside `ms.jit` and in GRAPH_MODE cells.

Each function is the MindSpore twin of the numpy reference with the same name in
`mindrlhf.algorithms.ppo_math` (same formulas, same masked-mean convention); `tests/test_losses.py` checks that
they agree on random inputs and that gradients flow only where they should. Hyper-parameters (cliprange,
temperature, ...) are Python floats, i.e. graph constants under `ms.jit`.

Shapes: B = batch, T = positions, V = vocabulary; masks are 1 on positions that count. All math runs in float32.
Notes for the CPU build: `mint.logsumexp` and `mint.nn.functional.log_softmax` have no CPU kernel, so the
`ops.log_softmax` kernel is used (one shared by log-probs and entropy: `_log_softmax_rows`); CPU `exp` is accurate to about 4e-6 relative (numpy float32: 2e-7).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import mindspore as ms
from mindspore import Tensor, mint, ops

from mindrlhf.models.llama.layers import rows


def metrics_dict(names: Sequence[str], values) -> Dict[str, float]:
    """A loss cell's metrics vector `[len(names)]` (Tensor or array) -> `{name: float}`.

    Every loss cell names its vector once, next to the cell (`ActorLoss.METRICS`, ...); trainers read metrics by
    name through this, never by position. A vector of another length raises (the names and the cell disagree).
    """
    values = values.asnumpy() if hasattr(values, "asnumpy") else values
    flat = [float(v) for v in list(values.reshape(-1))]
    if len(flat) != len(names):
        raise ValueError(f"a metrics vector of {len(flat)} values for {len(names)} names {tuple(names)}")
    return dict(zip(names, flat))


def masked_mean(x: Tensor, mask: Tensor, axis: Optional[int] = None) -> Tensor:
    """sum(x * mask) / max(sum(mask), 1) over `axis` (all axes when None). x, mask: [B, T]. Empty mask -> 0."""
    mask = mask.astype(x.dtype)
    if axis is None:
        return mint.sum(x * mask) / mint.clamp(mint.sum(mask), min=1.0)
    return mint.sum(x * mask, dim=axis) / mint.clamp(mint.sum(mask, dim=axis), min=1.0)


def _log_softmax_rows(logits: Tensor, temperature: float) -> Tensor:
    """log softmax(logits / temperature) over the `[B*T, V]` view, float32: ONE LogSoftmax kernel.

    Memory (docs/benchmarks.md, "PPO memory"): `z[label] - logsumexp(z)` looked cheaper but `ops.logsumexp` is
    max, a broadcasting `z - max`, exp, sum, log; on the CPU build that broadcasting Sub keeps ~4x its `[B*T, V]`
    output as workspace for the life of the graph, and the entropy then took its own log-softmax. With one
    log-softmax shared by the gather and the entropy, a logprob+entropy backward over `[1024, 8000]` logits grew
    RSS by 165 MB instead of 487 MB. CPU reductions over 3-D tensors are ~20x slower: hence the 2-D view.
    """
    z = rows(logits).astype(ms.float32)
    if temperature != 1.0:
        z = z / temperature
    return ops.log_softmax(z, -1)


def gather_logprobs(logits: Tensor, labels: Tensor, temperature: float = 1.0) -> Tensor:
    """log softmax(logits / temperature)[labels] in float32. logits: [B, T, V], labels: [B, T] int -> [B, T].

    Pass the sampling temperature so the log-probs are those of the distribution that was sampled.
    """
    logp = _log_softmax_rows(logits, temperature)  # (B*T, V)
    return mint.gather(logp, -1, labels.astype(ms.int64).reshape(-1, 1)).reshape(labels.shape)


def entropy_from_logits(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy of softmax(logits / temperature): -sum p log p. logits: [B, T, V] -> [B, T] float32."""
    logp = _log_softmax_rows(logits, temperature)
    return -mint.sum(mint.exp(logp) * logp, dim=-1).reshape(logits.shape[:-1])


def logprobs_and_entropy(logits: Tensor, labels: Tensor, temperature: float = 1.0) -> Tuple[Tensor, Tensor]:
    """`(gather_logprobs(...), entropy_from_logits(...))` from one shared log-softmax: `[B, T]` each, float32."""
    logp = _log_softmax_rows(logits, temperature)  # (B*T, V)
    picked = mint.gather(logp, -1, labels.astype(ms.int64).reshape(-1, 1)).reshape(labels.shape)
    entropy = -mint.sum(mint.exp(logp) * logp, dim=-1).reshape(labels.shape)
    return picked, entropy


def policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, response_mask: Tensor, cliprange: float
) -> Tuple[Tensor, Tensor, Tensor]:
    """PPO clipped surrogate (Schulman et al. 2017, eq. 7). All inputs [B, T]; returns scalars.

        ratio = exp(logprobs - old_logprobs)
        loss  = masked_mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)))
    Returns (loss, clipfrac, approx_kl); clipfrac and approx_kl ((ratio - 1) - log ratio) carry no gradient.
    The gradient w.r.t. logprobs is -A * ratio / n on masked-in tokens where the clip is inactive, else 0.
    """
    log_ratio = logprobs - old_logprobs
    ratio = mint.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * mint.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(mint.maximum(unclipped, clipped), response_mask)
    clipfrac = masked_mean(ops.stop_gradient(mint.gt(clipped, unclipped).astype(ms.float32)), response_mask)
    approx_kl = masked_mean(ops.stop_gradient(mint.expm1(log_ratio) - log_ratio), response_mask)
    return loss, clipfrac, approx_kl


def value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, response_mask: Tensor, cliprange_value: float
) -> Tuple[Tensor, Tensor]:
    """Clipped value loss: 0.5 * masked_mean(max((V - R)^2, (V_clip - R)^2)). All inputs [B, T].

    V_clip = old_values + clip(values - old_values, -eps_v, eps_v). Returns (loss, clipfrac), clipfrac being
    the fraction of tokens where the clip moved V and the clipped error won the max. The trainer scales the
    loss by vf_coef.
    """
    v_clipped = old_values + mint.clamp(values - old_values, -cliprange_value, cliprange_value)
    err_unclipped = mint.square(values - returns)
    err_clipped = mint.square(v_clipped - returns)
    loss = 0.5 * masked_mean(mint.maximum(err_unclipped, err_clipped), response_mask)
    # Inside the range old + (values - old) can differ from values in the last bit: count only real clips.
    clipped = mint.logical_and(
        mint.gt(mint.abs(values - old_values), cliprange_value), mint.gt(err_clipped, err_unclipped)
    )
    clipfrac = masked_mean(ops.stop_gradient(clipped.astype(ms.float32)), response_mask)
    return loss, clipfrac


def ptx_loss(logits: Tensor, input_ids: Tensor, loss_mask: Tensor) -> Tensor:
    """Masked next-token NLL. logits: [B, T, V] at input positions; input_ids, loss_mask: [B, T].

    loss_mask[t] = 1 means input_ids[t] is a target predicted from position t - 1 (loss_mask[:, 0] is ignored):
        loss = -masked_mean(log softmax(logits[:, :-1])[input_ids[:, 1:]], loss_mask[:, 1:])
    """
    logp = gather_logprobs(logits[:, :-1], input_ids[:, 1:])
    return -masked_mean(logp, loss_mask[:, 1:])
