"""In-graph token choice: greedy, or temperature / top-k / top-p sampling by inverse CDF, plus the log-probability.

Randomness comes in as a tensor of uniforms drawn on the host from a seeded numpy Generator, one per row and
step, so the same seed gives the same tokens in every graph and across calls (MindSpore's graph RNG keeps its
own state inside a compiled graph and is not reset by `ms.set_seed`).

The log-probability returned is always that of the chosen token under the *policy* distribution
softmax(logits / temperature) over the whole vocabulary, before top-k/top-p truncation: it is what the PPO
trainer recomputes from a forward pass, so rollout and training log-probabilities agree.
"""

from __future__ import annotations

import dataclasses

import mindspore as ms
from mindspore import nn, ops

# top-p without top-k: candidates tried before sorting the whole vocabulary. On CPU, TopK(1024) of [8, 32000] took
# ~2 ms where the full sort took ~16 ms (and the rest of a top-p step another ~15 ms on the sorted [B, V]).
TOP_P_PREFILTER = 1024


@dataclasses.dataclass(frozen=True)
class SamplingSpec:
    """The static part of the sampling rule (one compiled graph per spec); temperature and top_p are inputs.

    greedy: argmax of the logits. Otherwise sample from softmax(logits / temperature) restricted to the top_k
    most likely tokens (0 = all) and then to the smallest prefix of them holding top_p of their mass
    (use_top_p=False skips that step). The order temperature -> top-k -> top-p is transformers'.
    """

    greedy: bool
    top_k: int = 0
    use_top_p: bool = False


class TokenSampler(nn.Cell):
    """`(logits [B, V] f32, temperature [], top_p [], uniform [B] in (0, 1])` -> `(tokens [B] int32, logprobs [B])`.

    Sampling is by inverse CDF: with c the cumulative sum of the kept (unnormalised) probabilities, the token is
    the first index j with c_j >= u * c_last. Removed tokens add exactly 0 to c, so they can never be chosen, and
    u > 0 rules out index 0 when its probability is 0.
    """

    def __init__(self, spec: SamplingSpec, vocab_size: int, top_p_prefilter: int = TOP_P_PREFILTER):
        super().__init__()
        self.greedy = spec.greedy
        self.top_k = spec.top_k if 0 < spec.top_k < vocab_size else 0
        self.use_top_p = spec.use_top_p
        self.sorted = (not spec.greedy) and (self.top_k > 0 or spec.use_top_p)
        # top-p alone over a large vocabulary: try the `prefilter` most likely tokens first (exact when they hold
        # top_p of the mass in every row; otherwise this step sorts the whole vocabulary as before).
        self.prefilter = (
            top_p_prefilter if (self.sorted and self.top_k == 0 and vocab_size > top_p_prefilter) else 0
        )
        self.argmax_with_value = ops.ArgMaxWithValue(axis=-1, keep_dims=True)

    def construct(self, logits, temperature, top_p, uniform):
        # One pass finds both the greedy token and the max for a stable log-sum-exp (x / T is monotonic).
        argmax, max_logit = self.argmax_with_value(logits)  # (B, 1) each
        scaled = logits / temperature  # (B, V)
        max_scaled = max_logit / temperature
        unnormalised = ops.exp(scaled - max_scaled)  # (B, V), max entry 1
        total = ops.sum(unnormalised, -1, True)  # (B, 1)
        log_z = max_scaled + ops.log(total)  # (B, 1) policy normaliser
        if self.greedy:
            tokens = argmax.reshape(-1).astype(ms.int32)
        elif self.prefilter > 0:
            values, index = ops.topk(scaled, self.prefilter)  # (B, K) descending
            covered = (
                ops.sum(ops.exp(values - max_scaled), -1, True) >= top_p * total
            )  # nucleus inside the K?
            if ops.all(covered):
                tokens = self._nucleus(values, index, total, top_p, uniform)
            else:
                tokens = self._sample(scaled, total, top_p, uniform)
        elif self.sorted:
            tokens = self._sample(scaled, total, top_p, uniform)
        else:
            tokens = self._inverse_cdf(unnormalised, uniform)
        logprobs = ops.gather_elements(scaled, 1, tokens.reshape(-1, 1)) - log_z  # (B, 1)
        return tokens, logprobs.reshape(-1)

    def _sample(self, scaled, total, top_p, uniform):
        """top-k and/or top-p: work on the candidates sorted by probability, then map back to token ids."""
        if self.top_k > 0:
            values, index = ops.topk(scaled, self.top_k)  # (B, k) descending
            total = ops.sum(ops.exp(values - values[:, :1]), -1, True)  # top-p mass is within the top k
        else:
            values, index = ops.sort(scaled, -1, True)  # (B, V) descending; top-p alone needs the full order
        return self._nucleus(values, index, total, top_p, uniform)

    def _nucleus(self, values, index, total, top_p, uniform):
        """Sample among candidates `values [B, W]` (descending scaled logits, token ids `index`); with top-p, keep
        those whose more likely candidates hold less than top_p of `total` (the mass of exp(scaled - max) over
        every candidate, also those not in `values`)."""
        probs = ops.exp(values - values[:, :1])  # unnormalised, first entry 1
        if self.use_top_p:
            p = probs / total
            mass_before = ops.cumsum(p, -1) - p  # probability of the more likely candidates
            probs = ops.select(mass_before < top_p, probs, ops.zeros_like(probs))
        j = self._inverse_cdf(probs, uniform)
        return ops.gather_elements(index, 1, j.reshape(-1, 1)).reshape(-1).astype(ms.int32)

    @staticmethod
    def _inverse_cdf(probs, uniform):
        """Index of the first c_j >= u * c_last, c the cumulative sum of `probs [B, W]` (unnormalised)."""
        cdf = ops.cumsum(probs, -1)
        target = uniform.reshape(-1, 1) * cdf[:, -1:]
        j = ops.sum((cdf < target).astype(ms.int32), -1)
        return ops.clamp(j, max=cdf.shape[-1] - 1).astype(ms.int32)  # (B,)
