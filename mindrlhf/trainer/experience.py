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
    old_values: Optional[
        np.ndarray
    ]  # [B, N] float32: critic values of the states that chose each token (gae)
    scores: np.ndarray  # [B] float32: reward-model scores (raw)
    rewards: np.ndarray  # [B, N] float32: -beta * KL_t, + (normalised/clipped) score at the last token
    advantages: (
        np.ndarray
    )  # [B, N] float32 GAE (whitened when configured), or [B] group advantages (critic-free)
    returns: Optional[np.ndarray]  # [B, N] float32: GAE advantages (before whitening) + values (gae only)
    pretrain_ids: Optional[
        np.ndarray
    ]  # [B, T] int32: prompt + aligned answer, for the ptx loss (PPO datasets)
    pretrain_mask: Optional[np.ndarray]  # [B, T] int32
    loss_mask: Optional[np.ndarray]  # [B, T] float32: 1 where pretrain_ids[t] is a ptx target
    has_eos: Optional[np.ndarray] = None  # [B] bool: the response ended with EOS (else truncated)
    reward_metrics: Optional[Dict[str, float]] = None  # per-source reward means/stds of this rollout


class PromptBatches:
    """Rollout batch i of a PPO or prompt MindRecord, for any i: epoch i // n, batch i % n (n batches per epoch).

    `kind` None reads the dataset's kind from its .meta.json ("ppo" or "prompt"); a prompt dataset's batches
    also carry its extra string columns (`{"answer": str [B], ...}`), which reward functions receive.

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
        kind: Optional[str] = None,
    ):
        from mindrlhf.data.reader import load_meta, read_dataset

        self.kind = kind or load_meta(path).get("kind", "ppo")
        self.reader = read_dataset(
            path, self.kind, batch_size, shuffle=True, seed=seed, shard_id=shard_id, num_shards=num_shards
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
