"""The MindSpore side of critic-free RL (GRPO, Dr. GRPO, RLOO): scoring forwards and the actor loss.

Same layout as `ppo_cells`: sequences `[B, P + N]`, response log-probs read at positions P - 1 .. P + N - 2.
A critic-free iteration scores with at most two frozen models (the reward model when one is given, the reference
when a KL uses it), each its own jitted graph, built only when it exists. The loss is
`policy_losses.PolicyLoss` (clip-higher, aggregation, ratio level chosen at construction) plus beta times the
k3 KL term aggregated the same way (Shao et al. 2024, eq. 4), minus an optional entropy bonus.
"""

from __future__ import annotations

from typing import Optional

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from mindrlhf.trainer import losses
from mindrlhf.trainer.data_parallel import GlobalMean
from mindrlhf.trainer.policy_losses import PolicyLoss, kl_in_loss
from mindrlhf.trainer.ppo_cells import ResponseLogprobs, ResponseValues, check_groups


class ReferenceLogprobs(nn.Cell):
    """Frozen reference log-probs of the response tokens `[B, N]`, one compiled graph (group_size > 1: each group's
    shared prompt computed once, `ResponseLogprobs`)."""

    def __init__(self, reference: nn.Cell, prompt_length: int, temperature: float, group_size: int = 1):
        super().__init__(auto_prefix=False)
        self.logprobs = ResponseLogprobs(reference, prompt_length, temperature, group_size)

    @ms.jit
    def construct(self, sequences, attention_mask):
        logprobs, _ = self.logprobs(sequences, attention_mask)
        return logprobs


class RewardScores(nn.Cell):
    """Reward-model scores `[B]` (read at the last real token), one compiled graph."""

    def __init__(self, reward: nn.Cell):
        super().__init__(auto_prefix=False)
        self.reward = reward

    @ms.jit
    def construct(self, sequences, attention_mask):
        return self.reward.score(sequences, attention_mask)


class CriticValues(nn.Cell):
    """Critic values of the states that chose each response token `[B, N]`, one compiled graph."""

    def __init__(self, critic: nn.Cell, prompt_length: int):
        super().__init__(auto_prefix=False)
        self.values = ResponseValues(critic, prompt_length)

    @ms.jit
    def construct(self, sequences, attention_mask):
        return self.values(sequences, attention_mask)


class SeparateScoring:
    """Step 2 when some model is absent: (rm_scores [B], ref_logprobs [B, N], values [B, N]) as numpy, None for
    each absent model. A compiled graph exists only for the models given: the reward model (optional with
    reward functions), the reference (only when a KL uses it), the critic (gae only). With all three,
    `ppo_cells.ScoringForwards` runs them in one graph instead. group_size G > 1 (critic-free): the reference
    computes each group's prompt once; the rows must then come in groups of G equal prompts (checked, ValueError)."""

    def __init__(
        self,
        reward: Optional[nn.Cell],
        reference: Optional[nn.Cell],
        critic: Optional[nn.Cell],
        prompt_length: int,
        temperature: float,
        group_size: int = 1,
    ):
        ref = None
        if reference is not None:
            ref = ReferenceLogprobs(reference, prompt_length, temperature, group_size)
        self.group_size = 1 if ref is None else ref.logprobs.group_size
        self.prompt_length = prompt_length
        self.parts = (
            RewardScores(reward) if reward is not None else None,
            ref,
            CriticValues(critic, prompt_length) if critic is not None else None,
        )

    def __call__(self, sequences: np.ndarray, attention_mask: np.ndarray):
        check_groups(sequences, attention_mask, self.prompt_length, self.group_size)
        seq, mask = Tensor(sequences), Tensor(attention_mask)
        return tuple(None if part is None else part(seq, mask).asnumpy() for part in self.parts)


class CriticFreeActorLoss(nn.Cell):
    """policy_loss(A broadcast over tokens) + beta * agg(k3(logp, ref_logp)) - entropy_coef * entropy.

    construct(sequences [B, P+N], attention_mask [B, P+N], response_mask [B, N], old_logprobs [B, N],
    advantages [B], ref_logprobs [B, N]) -> (loss, metrics `[len(METRICS)]` named by `METRICS`).
    `response_mask` here is the loss mask (with `mask_truncated_completions`, truncated rows are 0).
    With beta == 0 the KL term is not in the graph and ref_logprobs is ignored (pass zeros).
    group_size G > 1: each mini-batch holds whole groups of G rows with one prompt, computed once per group
    (`ResponseLogprobs`; the trainer checks the groups on the host before each step).
    `world` > 1 data-parallel ranks: N ranks train as one process on the global mini-batch. The loss is averaged
    over ranks weighted by what its aggregation divides by: real tokens for token_mean, rows for the per-row
    aggregations (seq_mean_token_mean, seq_mean_token_sum_norm: every rank holds the same number of rows, so
    this is the plain mean over ranks; weighting those by tokens would favour the ranks with longer responses).
    Token-level metrics (clipfrac, approx_kl, entropy, log-prob diff) are weighted by tokens.
    """

    METRICS = (
        "policy_loss", "clipfrac", "clipfrac_low", "clipfrac_high", "approx_kl", "kl", "entropy",
        "logprob_diff_max", "logprob_diff_mean",
    )  # fmt: skip

    def __init__(
        self,
        actor: nn.Cell,
        prompt_length: int,
        temperature: float,
        policy_loss: PolicyLoss,
        beta: float,
        entropy_coef: float,
        world: int = 1,
        group_size: int = 1,
    ):
        super().__init__(auto_prefix=False)
        self.logprobs = ResponseLogprobs(actor, prompt_length, temperature, group_size)
        self.group_size = self.logprobs.group_size  # 1 when the model cannot share prompts
        self.policy_loss = policy_loss
        self.temperature = float(temperature)
        self.beta = float(beta)
        self.entropy_coef = float(entropy_coef)
        self.global_mean = GlobalMean(world)
        self.loss_weighted_by_tokens = policy_loss.aggregation.loss_agg == "token_mean"
        self.distributed = world > 1
        if self.distributed:
            self.all_gather = ops.AllGather()

    def construct(self, sequences, attention_mask, response_mask, old_logprobs, advantages, ref_logprobs):
        tokens = ops.stop_gradient(response_mask.astype(ms.float32).sum())
        rows = ops.ones((), ms.float32) * response_mask.shape[0]
        loss_weight = tokens if self.loss_weighted_by_tokens else rows
        logprobs, token_entropy = self.logprobs.with_entropy(sequences, attention_mask)
        pg_loss, clipfrac, low, high, approx_kl = self.policy_loss(
            logprobs, old_logprobs, advantages, response_mask
        )
        pg_loss = self.global_mean(pg_loss, loss_weight)
        loss = pg_loss
        kl = ops.zeros((), ms.float32)
        if self.beta > 0:  # a graph constant: no reference input is read when the KL term is off
            kl = self.global_mean(
                self.policy_loss.aggregation(kl_in_loss(logprobs, ref_logprobs), response_mask), loss_weight
            )
            loss = loss + self.beta * kl
        entropy = self.global_mean(losses.masked_mean(token_entropy, response_mask), tokens)
        if self.entropy_coef > 0:
            loss = loss - self.entropy_coef * entropy
        diff = ops.abs(ops.stop_gradient(logprobs) - old_logprobs) * response_mask
        diff_max = diff.max()
        if self.distributed:
            diff_max = self.all_gather(diff_max.reshape(1)).max()
        metrics = ops.stack(
            [ops.stop_gradient(pg_loss), self.global_mean(clipfrac, tokens), self.global_mean(low, tokens),
             self.global_mean(high, tokens), self.global_mean(approx_kl, tokens), ops.stop_gradient(kl),
             ops.stop_gradient(entropy), diff_max, self.global_mean(losses.masked_mean(diff, response_mask), tokens)]
        )  # fmt: skip
        return loss, metrics
