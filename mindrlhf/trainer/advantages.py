"""Step 3 of an RL iteration: reward scores -> per-token rewards, advantages (and, with a critic, returns).

Chosen once at setup by `advantage_estimator`: GAE with the critic's values (PPO) or group-relative advantages
(GRPO / Dr. GRPO / RLOO, `mindrlhf.algorithms.group_advantages`). Before either, non-finite reward scores are
caught (`score_guard.NonFiniteScores`): set to 0, kept out of the running score statistics and (through `ok`)
out of the losses. Statistics, whitening and the guard's counts cover every data-parallel rank's rollouts.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from mindrlhf.algorithms import grpo_math, ppo_math


class Advantages:
    """`advantages(scores, old_logprobs, ref_logprobs, values, response_mask) -> (rewards, advantages, returns)`.

    scores `[B]` raw; old_logprobs / ref_logprobs / values / response_mask `[B, N]` (values None without a
    critic). After `finite(scores, iteration)`: `ok` `[B]` (1 = finite score), `no_update` (no finite score).
    """

    def __init__(self, config: Any, kl_controller: Any, score_normalizer: Any, score_guard: Any, ranks: Any):
        self.config, self.kl_controller = config, kl_controller
        self.score_normalizer, self.score_guard, self.ranks = score_normalizer, score_guard, ranks
        self._compute = self._group if config.critic_free else self._gae
        self.ok, self.all_finite, self.no_update = np.ones(0, np.float32), True, False  # current batch

    def __call__(self, scores, old_logprobs, ref_logprobs, values, response_mask):
        return self._compute(scores, old_logprobs, ref_logprobs, values, response_mask)

    def finite(self, scores: np.ndarray, iteration: int) -> np.ndarray:
        """NaN/inf reward scores `[B]`: 0 instead, kept out of the running statistics (`shape`) and, through
        `ok` `[B]`, out of the losses; `no_update` when none is left. Raises RewardError after too many."""
        ok, bad, total = self.score_guard.check(scores, self.ranks, iteration)
        self.ok, self.all_finite, self.no_update = ok.astype(np.float32), bad == 0, bad == total
        return scores if ok.all() else np.where(ok, scores, 0.0)

    def shape(self, scores: np.ndarray) -> np.ndarray:
        """Normalise/clip scores; the running statistics are updated with every rank's scores (rank order),
        except those `finite` left out (NaN/inf: their rows get 0)."""
        if self.all_finite and self.ranks.world == 1:  # (all_finite: global counts, alike on every rank)
            return self.score_normalizer(scores)
        if self.all_finite:
            self.score_normalizer(self.ranks.gather(scores))  # identical update on every rank
            return self.score_normalizer(scores, update=False)
        ok = self.ok
        pairs = (scores, ok) if self.ranks.world == 1 else (self.ranks.gather(scores), self.ranks.gather(ok))
        self.score_normalizer(pairs[0][pairs[1] > 0])
        return np.where(ok > 0, self.score_normalizer(scores, update=False), 0.0)

    def _rewards(self, scores, old_logprobs, ref_logprobs, response_mask) -> np.ndarray:
        """Per-token rewards `[B, N]`: -kl_coef * KL_t plus the shaped score at the last response token."""
        c = self.config
        return ppo_math.compute_rewards(
            old_logprobs, ref_logprobs, self.shape(scores), response_mask, self.kl_controller.value,
            c.kl_estimator,
        )  # fmt: skip

    def _gae(self, scores, old_logprobs, ref_logprobs, values, response_mask):
        """PPO: (rewards, advantages, returns) `[B, N]`. GAE(gamma, lambda) over the critic's values; advantages
        whitened over the response tokens of all ranks when `whiten_advantages`; returns are GAE advantages
        (before whitening) + values."""
        c = self.config
        rewards = self._rewards(scores, old_logprobs, ref_logprobs, response_mask)
        advantages, returns = ppo_math.gae_advantages(rewards, values, response_mask, c.gamma, c.lam)
        if c.whiten_advantages:
            advantages = self.ranks.whiten(advantages, response_mask)
        return rewards, advantages, returns

    def _group(
        self, scores, old_logprobs, ref_logprobs, values, response_mask
    ) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
        """Critic-free: (rewards [B, N], advantages [B], None). The per-token rewards are PPO's (critic-free configs
        usually set init_kl_coef 0 and put beta * k3 in the loss instead); each response's summed reward is its
        sequence reward, and `group_advantages` compares it with the other samples of its prompt (GRPO:
        (R - mean) / (std + eps); Dr. GRPO: R - mean; RLOO: leave-one-out)."""
        c = self.config
        rewards = self._rewards(scores, old_logprobs, ref_logprobs, response_mask)
        advantages = grpo_math.group_advantages(rewards.sum(1), c.num_generations, c.advantage_estimator)
        return rewards, advantages, None
