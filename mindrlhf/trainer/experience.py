"""What one PPO/GRPO iteration works on: the prompt batches it reads and the experience it builds."""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional

import numpy as np


@dataclasses.dataclass
class Experience:
    """One rollout batch. B = rollout batch, P = prompt length, N = max_new_tokens, T = seq_length."""

    sequences: np.ndarray  # [B, P+N] int32: left-padded prompt + response (pad after EOS)
    attention_mask: np.ndarray  # [B, P+N] int32: 1 on real prompt and response tokens
    response_mask: np.ndarray  # [B, N] float32: 1 on real response tokens (EOS included)
    old_logprobs: np.ndarray  # [B, N] float32: rollout log-probs under softmax(logits / temperature)
    ref_logprobs: np.ndarray  # [B, N] float32: the same under the frozen reference
    old_values: np.ndarray  # [B, N] float32: critic values of the states that chose each token
    scores: np.ndarray  # [B] float32: reward-model scores (raw)
    rewards: np.ndarray  # [B, N] float32: -beta * KL_t, + (normalised/clipped) score at the last token
    advantages: np.ndarray  # [B, N] float32: GAE, whitened over response tokens when configured
    returns: np.ndarray  # [B, N] float32: GAE advantages (before whitening) + values
    pretrain_ids: np.ndarray  # [B, T] int32: prompt + aligned answer, for the ptx loss
    pretrain_mask: np.ndarray  # [B, T] int32
    loss_mask: np.ndarray  # [B, T] float32: 1 where pretrain_ids[t] is a ptx target


class PromptBatches:
    """Rollout batch i of a PPO MindRecord, for any i: epoch i // n, batch i % n (n batches per epoch).

    Deterministic given the seed (each epoch reshuffles), shardable for data parallel, and resumable at any
    iteration because the trainer asks for batch `iteration`.
    """

    def __init__(
        self,
        path: str,
        batch_size: int,
        seed: int,
        num_shards: Optional[int] = None,
        shard_id: Optional[int] = None,
    ):
        from mindrlhf.data.reader import read_dataset

        self.reader = read_dataset(
            path, "ppo", batch_size, shuffle=True, seed=seed, shard_id=shard_id, num_shards=num_shards
        )
        self._iter = None
        self._next = -1

    def __len__(self) -> int:
        return len(self.reader)

    def batch(self, index: int) -> Dict[str, np.ndarray]:
        n = len(self.reader)
        if self._iter is None or self._next != index:
            self._iter = self.reader.iter_epoch(index // n, index % n)
        out = next(self._iter)
        self._next = index + 1
        if self._next % n == 0:
            self._iter = None  # next epoch: new order
        return out
