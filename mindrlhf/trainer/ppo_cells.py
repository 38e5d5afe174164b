"""The MindSpore side of PPO: jitted forwards over fixed shapes (log-probs, values, scores) and the two losses.

Sequences are `[B, P + N]`: a left-padded prompt of P tokens then N response slots, right-padded after EOS.
The token at position P + t is predicted from position P + t - 1, so response log-probs and values are read at
positions P - 1 .. P + N - 2 (the state in which each response token was chosen).
"""

from __future__ import annotations

import logging

import mindspore as ms
import numpy as np
from mindspore import nn, ops

from mindrlhf.trainer import losses
from mindrlhf.trainer.data_parallel import GlobalMean

logger = logging.getLogger(__name__)


def shared_prompt_group(model: nn.Cell, prompt_length: int, group_size: int) -> int:
    """The group size a forward of `model` can share prompts over: `group_size`, or 1 (the plain forward) when the
    model has no grouped forward, has recompute configured or is sharded, or the prompt is a single token."""
    if group_size <= 1:
        return 1
    inner = getattr(model, "model", None)
    supported = getattr(inner, "grouped_forward_supported", None)
    if supported is None or not supported() or prompt_length < 2:
        logger.info("prompt sharing off (recompute, sharding or a 1-token prompt): plain forward per row")
        return 1
    return int(group_size)


def check_groups(
    sequences: np.ndarray, attention_mask: np.ndarray, prompt_length: int, group_size: int
) -> None:
    """ValueError unless the rows come in contiguous groups of `group_size` with identical prompts and prompt
    masks (the first `prompt_length` columns): what a grouped forward assumes. numpy, ~B*P compares."""
    if group_size <= 1:
        return
    b = sequences.shape[0]
    if b % group_size:
        raise ValueError(f"{b} rows do not split into groups of num_generations={group_size}")
    for name, x in (("prompt", sequences), ("prompt mask", attention_mask)):
        head = x[:, :prompt_length].reshape(b // group_size, group_size, prompt_length)
        bad = np.flatnonzero((head != head[:, :1]).any(axis=(1, 2)))
        if bad.size:
            raise ValueError(
                f"rows {bad[0] * group_size}..{bad[0] * group_size + group_size - 1} hold different {name}s: "
                f"a grouped forward needs each prompt's {group_size} samples in contiguous rows with the same "
                "prompt, in order (as make_experience builds them)"
            )


class ResponseLogprobs(nn.Cell):
    """log softmax(logits / T) of the response tokens `[B, N]` (and the logits `[B, N, V]`), lm_head only on them.

    group_size G > 1: the rows come in contiguous groups of G identical prompts (GRPO) and each prompt's forward
    runs once per group (`LlamaModel.response_hidden`); the caller guarantees the groups (`check_groups`). A model
    with recompute configured or sharded (semi/auto parallel), or a prompt of one token, uses the plain forward.
    """

    def __init__(self, model: nn.Cell, prompt_length: int, temperature: float, group_size: int = 1):
        super().__init__(auto_prefix=False)
        self.model = model
        self.p = prompt_length
        self.temperature = float(temperature)
        self.group_size = shared_prompt_group(model, prompt_length, group_size)

    def response_logits(self, sequences, attention_mask):
        if self.group_size > 1:  # a graph constant
            hidden = self.model.model.response_hidden(sequences, attention_mask, self.p, self.group_size)
        else:
            hidden = self.model.model(sequences, attention_mask)[:, self.p - 1 : -1]
        return self.model.lm_head(hidden).astype(ms.float32)  # hidden (B, N, H) -> (B, N, V)

    def construct(self, sequences, attention_mask):
        logits = self.response_logits(sequences, attention_mask)
        logprobs = losses.gather_logprobs(logits, sequences[:, self.p :], self.temperature)
        return logprobs, logits

    def with_entropy(self, sequences, attention_mask):
        """(log-probs `[B, N]`, entropy `[B, N]`) from one log-softmax over the response logits (the loss cells':
        no second `[B, N, V]` pass for the entropy)."""
        logits = self.response_logits(sequences, attention_mask)
        return losses.logprobs_and_entropy(logits, sequences[:, self.p :], self.temperature)


class ResponseValues(nn.Cell):
    """Critic values of the states that chose each response token: `[B, N]` float32."""

    def __init__(self, critic: nn.Cell, prompt_length: int):
        super().__init__(auto_prefix=False)
        self.critic = critic
        self.p = prompt_length

    def construct(self, sequences, attention_mask):
        return self.critic(sequences, attention_mask)[:, self.p - 1 : -1]


class ScoringForwards(nn.Cell):
    """Step 2 of an iteration in one compiled graph: reward scores `[B]`, reference log-probs and values `[B, N]`."""

    def __init__(
        self, reference: nn.Cell, reward: nn.Cell, critic: nn.Cell, prompt_length: int, temperature: float
    ):
        super().__init__(auto_prefix=False)
        self.ref_logprobs = ResponseLogprobs(reference, prompt_length, temperature)
        self.reward = reward
        self.values = ResponseValues(critic, prompt_length)

    @ms.jit
    def construct(self, sequences, attention_mask):
        scores = self.reward.score(sequences, attention_mask)
        ref_logprobs, _ = self.ref_logprobs(sequences, attention_mask)
        values = self.values(sequences, attention_mask)
        return scores, ref_logprobs, values


class ActorLoss(nn.Cell):
    """PPO-clip policy loss − entropy_coef · entropy + ptx_coef · pretrain NLL; returns (loss, metrics).

    metrics is the vector `[len(METRICS)]` named by `METRICS` (read it with `losses.metrics_dict`); the two
    logprob_diff entries (max and mean |logp − old_logp|), on a mini-batch seen before any update, check that
    rollout and training log-probs agree. `world` > 1 data-parallel ranks: every mean runs over the tokens of all
    ranks (`GlobalMean`), so N ranks train as one process on the global mini-batch.
    """

    METRICS = (
        "policy_loss", "clipfrac", "approx_kl", "entropy", "ptx_loss", "logprob_diff_max", "logprob_diff_mean",
    )  # fmt: skip

    def __init__(self, actor, prompt_length, temperature, cliprange, entropy_coef, ptx_coef, world: int = 1):
        super().__init__(auto_prefix=False)
        self.logprobs = ResponseLogprobs(actor, prompt_length, temperature)
        self.actor = actor
        self.temperature = float(temperature)
        self.cliprange = float(cliprange)
        self.entropy_coef = float(entropy_coef)
        self.ptx_coef = float(ptx_coef)
        self.global_mean = GlobalMean(world)
        self.distributed = world > 1
        if self.distributed:
            self.all_gather = ops.AllGather()  # CPU AllReduce sums only: max over a gather

    def construct(
        self,
        sequences,
        attention_mask,
        response_mask,
        old_logprobs,
        advantages,
        pretrain_ids,
        pretrain_mask,
        loss_mask,
    ):
        tokens = ops.stop_gradient(response_mask.astype(ms.float32).sum())
        logprobs, token_entropy = self.logprobs.with_entropy(sequences, attention_mask)
        pg_loss, clipfrac, approx_kl = losses.policy_loss(
            logprobs, old_logprobs, advantages, response_mask, self.cliprange
        )
        pg_loss = self.global_mean(pg_loss, tokens)
        entropy = self.global_mean(losses.masked_mean(token_entropy, response_mask), tokens)
        loss = pg_loss
        if self.entropy_coef > 0:  # a graph constant: no entropy backward over [B, N, V] when unused
            loss = loss - self.entropy_coef * entropy
        ptx = ops.zeros((), ms.float32)
        if self.ptx_coef > 0:  # a graph constant: the ptx forward exists only when it is used
            ptx = losses.ptx_loss(self.actor(pretrain_ids, pretrain_mask), pretrain_ids, loss_mask)
            ptx = self.global_mean(ptx, ops.stop_gradient(loss_mask[:, 1:].astype(ms.float32).sum()))
            loss = loss + self.ptx_coef * ptx
        diff = ops.abs(ops.stop_gradient(logprobs) - old_logprobs) * response_mask
        diff_max = diff.max()
        if self.distributed:
            diff_max = self.all_gather(diff_max.reshape(1)).max()
        metrics = ops.stack(
            [pg_loss, self.global_mean(clipfrac, tokens), self.global_mean(approx_kl, tokens),
             ops.stop_gradient(entropy), ops.stop_gradient(ptx), diff_max,
             self.global_mean(losses.masked_mean(diff, response_mask), tokens)]
        )  # fmt: skip
        return loss, metrics


class CriticLoss(nn.Cell):
    """vf_coef · clipped value loss; returns (loss, metrics `[len(METRICS)]` named by `METRICS`).

    `world` > 1 data-parallel ranks: the means run over every rank's response tokens (`GlobalMean`).
    """

    METRICS = ("value_loss", "value_clipfrac", "value_mean")

    def __init__(self, critic, prompt_length, cliprange_value, vf_coef, world: int = 1):
        super().__init__(auto_prefix=False)
        self.values = ResponseValues(critic, prompt_length)
        self.cliprange_value = float(cliprange_value)
        self.vf_coef = float(vf_coef)
        self.global_mean = GlobalMean(world)

    def construct(self, sequences, attention_mask, response_mask, old_values, returns):
        tokens = ops.stop_gradient(response_mask.astype(ms.float32).sum())
        values = self.values(sequences, attention_mask)
        vf_loss, vf_clipfrac = losses.value_loss(
            values, old_values, returns, response_mask, self.cliprange_value
        )
        vf_loss = self.global_mean(vf_loss, tokens)
        mean_value = losses.masked_mean(ops.stop_gradient(values), response_mask)
        metrics = ops.stack(
            [vf_loss, self.global_mean(vf_clipfrac, tokens), self.global_mean(mean_value, tokens)]
        )
        return self.vf_coef * vf_loss, metrics
