"""What PPO keeps between iterations, in numpy: the KL coefficient controllers and the running score statistics.

Split from `ppo_math` (the per-batch formulas); `ppo_math` re-exports every name here, so
`ppo_math.make_kl_controller` and `ppo_math.ScoreNormalizer` keep working. Every `state_dict()` holds Python
floats, so a save/restore through the run state's JSON resumes bit-exactly. Never imports mindspore.

References:
    [Z19]  Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", arXiv:1909.08593.
"""

from __future__ import annotations

import logging
import math
from typing import Dict, Optional, Union

import numpy as np

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Score statistics
# ----------------------------------------------------------------------------------------------------------------


class RunningMeanStd:
    """Running mean and (population) variance of every value seen, merged batch by batch.

    Uses the parallel-variance formula of Chan et al. (1979), exact up to float64 rounding. `state_dict()` holds
    Python floats, so a save/restore through JSON resumes bit-exactly.
    """

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 0.0
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        """Merge a batch of values (any shape) into the statistics."""
        x = np.asarray(x, dtype=np.float64).reshape(-1)
        if x.size == 0:
            return
        batch_mean = float(np.mean(x))
        batch_var = float(np.var(x))
        n_a, n_b = self.count, x.size
        total = n_a + n_b
        delta = batch_mean - self.mean
        m2 = self.var * n_a + batch_var * n_b + delta * delta * n_a * n_b / total
        self.mean = self.mean + delta * n_b / total
        self.var = m2 / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    def state_dict(self) -> Dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self.mean = float(state["mean"])
        self.var = float(state["var"])
        self.count = int(state["count"])


class ScoreNormalizer:
    """Reward-model scores -> the scores PPO sees: optional running normalisation, then optional clipping.

        s' = (s - running_mean) / running_std     if normalize (running stats include the current batch)
        s' = s / running_std                      if normalize and not shift_mean (scaling only)
        s' = clip(s', -score_clip, score_clip)    if score_clip is set

    The running std is replaced by 1 while it is below `eps` (e.g. after a single score), so a tiny first batch
    cannot blow the scores up. State (the running statistics) is saved with the checkpoint for exact resume.
    """

    def __init__(
        self,
        normalize: bool = False,
        score_clip: Optional[float] = None,
        shift_mean: bool = True,
        eps: float = 1e-8,
    ) -> None:
        if score_clip is not None and not score_clip > 0:
            raise ValueError(f"score_clip must be > 0 or None, got {score_clip}")
        self.normalize = normalize
        self.score_clip = score_clip
        self.shift_mean = shift_mean
        self.eps = eps
        self.stats = RunningMeanStd()

    def __call__(self, scores: np.ndarray, update: bool = True) -> np.ndarray:
        """scores: [B] -> [B] float64. `update=False` normalises with the current statistics (evaluation)."""
        scores = np.asarray(scores, dtype=np.float64)
        if self.normalize:
            if update:
                self.stats.update(scores)
            std = self.stats.std if self.stats.std >= self.eps else 1.0
            scores = (scores - self.stats.mean) / std if self.shift_mean else scores / std
        if self.score_clip is not None:
            scores = np.clip(scores, -self.score_clip, self.score_clip)
        return scores

    def state_dict(self) -> Dict[str, float]:
        return self.stats.state_dict()

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self.stats.load_state_dict(state)


# ----------------------------------------------------------------------------------------------------------------
# KL coefficient controllers
# ----------------------------------------------------------------------------------------------------------------


class FixedKLController:
    """A constant KL coefficient beta. `update` is a no-op, so the trainer can call it unconditionally."""

    kind = "fixed"

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> Dict[str, float]:
        return {"kind": self.kind, "value": self.value}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        _check_kind(state, self.kind)
        self.value = float(state["value"])


class AdaptiveKLController:
    """Adaptive KL coefficient of [Z19] section 2.2, steering the observed KL towards `target`:

        e_t    = clip(KL_t / target - 1, -0.2, 0.2)
        beta  <- beta * (1 + K_beta * e_t)            with K_beta = n_steps / horizon

    `current_kl` is the mean per-sequence KL(pi || pi_ref) of the latest batch (sum over response tokens,
    averaged over sequences), `n_steps` the number of sequences in that batch. Call once per iteration.
    """

    kind = "adaptive"

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        if not target > 0 or not horizon > 0:
            raise ValueError(f"target and horizon must be > 0, got target={target}, horizon={horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Update and return the coefficient."""
        proportional_error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + proportional_error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> Dict[str, float]:
        return {"kind": self.kind, "value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        _check_kind(state, self.kind)
        self.value = float(state["value"])
        if float(state["target"]) != self.target or float(state["horizon"]) != self.horizon:
            logger.warning(
                "restoring the KL coefficient saved with target=%s horizon=%s into a controller with target=%s "
                "horizon=%s; the configured target and horizon are kept",
                state["target"],
                state["horizon"],
                self.target,
                self.horizon,
            )


def _check_kind(state: Dict[str, float], kind: str) -> None:
    if state.get("kind") != kind:
        raise ValueError(
            f"KL controller state is for a {state.get('kind')!r} controller, this one is {kind!r}"
        )


def make_kl_controller(
    adaptive: bool, init_kl_coef: float, target: float, horizon: int
) -> Union[FixedKLController, AdaptiveKLController]:
    """The KL controller a PPOConfig asks for (chosen once, at setup)."""
    if adaptive:
        return AdaptiveKLController(init_kl_coef, target, horizon)
    return FixedKLController(init_kl_coef)
