"""Non-finite reward-model scores caught where they appear (issue 15): counted, kept out, and not for ever.

A reward model returning NaN/inf used to poison everything silently: every step overflowed and was skipped, the
loss scale collapsed (256 -> 4), a NaN went into the running score statistics for good (and into state.json),
and the run "succeeded". `NonFiniteScores.check` is called on each rollout batch's scores: it warns with the
count, tells the trainer which rows to leave out, and raises RewardError after `limit` iterations in a row.
"""

from __future__ import annotations

import logging
from typing import Any, Tuple

import numpy as np

from mindrlhf.errors import MindRLHFError

logger = logging.getLogger(__name__)


class RewardError(MindRLHFError):
    """The reward model keeps returning NaN/inf scores."""


class NonFiniteScores:
    """Counts iterations in a row with NaN/inf scores; `limit` of them stop the run with a RewardError."""

    def __init__(self, limit: int):
        self.limit = int(limit)
        self.streak = 0

    def check(self, scores: np.ndarray, ranks: Any, iteration: int) -> Tuple[np.ndarray, int, int]:
        """scores `[B]` of this rank -> (ok `[B]` bool: finite, bad, total: NaN/inf and all scores of all ranks).

        Counts are global over data-parallel ranks (`ranks.sum`), so every rank takes the same decisions."""
        ok = np.isfinite(scores)
        bad, total = int((~ok).sum()), ok.size
        if ranks.world > 1:
            bad, total = (int(x) for x in ranks.sum(np.array([bad, total], np.float64)))
        if not bad:
            self.streak = 0
            return ok, 0, total
        self.streak += 1
        logger.warning(
            "iteration %d: %d of %d reward-model scores are NaN/inf; those responses are left out of the score "
            "statistics and the update (%d such iteration(s) in a row; the run stops at %d)",
            iteration, bad, total, self.streak, self.limit,
        )  # fmt: skip
        if self.streak >= self.limit:
            raise RewardError(
                f"the reward model returned NaN/inf scores in {self.streak} iterations in a row (iterations "
                f"{iteration - self.streak + 1}..{iteration}; {bad} of {total} in the last): check the reward "
                "model's weights and inputs (--reward_model_path); max_nonfinite_iterations sets the patience "
                f"(now {self.limit})"
            )
        return ok, bad, total
