"""PPOConfig: every PPO hyper-parameter in one typed, validated dataclass (TRL's `*_config.py` shape).

Load with `PPOConfig.from_yaml("model_configs/ppo_config.yaml", overrides=["--cliprange", "0.3"])`. Unknown keys
are errors (a typo must not silently fall back to a default). Loss-scale settings are not here: they come from
the model run YAML's `runner_wrapper.scale_sense`.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

from mindrlhf.algorithms.grpo_math import ADVANTAGE_ESTIMATORS, LOSS_AGGREGATIONS, RATIO_LEVELS
from mindrlhf.algorithms.ppo_math import KL_ESTIMATORS
from mindrlhf.configs.trainer_base import LR_DECAYS, TrainerConfig
from mindrlhf.configs.trainer_base import require as _require

__all__ = ["ESTIMATORS", "LR_DECAYS", "PPOConfig"]

ESTIMATORS = ("gae", *ADVANTAGE_ESTIMATORS)
"""`advantage_estimator` values: "gae" (PPO with a critic) or a critic-free group estimator."""


@dataclasses.dataclass
class PPOConfig(TrainerConfig):
    """PPO-RLHF hyper-parameters. One iteration = 1. generate, 2. score, 3. advantages, 4. optimise.

    `advantage_estimator` picks step 3: "gae" is PPO with a critic; "grpo", "dr_grpo" and "rloo" are critic-free
    (group advantages over the `num_generations` samples of each prompt; no critic is built). Critic-free runs
    use `clip_low`/`clip_high`, `loss_agg`, `ratio_level` and `beta` in step 4; "gae" keeps `cliprange`.
    """

    # --- estimator ------------------------------------------------------------------------------------------
    advantage_estimator: str = "gae"
    """gae (PPO, critic + GAE) | grpo (Shao et al. 2024) | dr_grpo (Liu et al. 2025) | rloo (Ahmadian et al. 2024)."""
    num_generations: int = 1
    """G responses sampled per prompt (rows of a prompt contiguous); must divide rollout_batch_size.
    The critic-free estimators need G >= 2 (grpo, rloo); mini-batches may split a group (advantages are
    computed on the whole rollout first)."""
    beta: float = 0.0
    """Critic-free runs: weight of the k3 KL(pi || pi_ref) term in the loss (GRPO eq. 4); >= 0. With beta == 0
    and init_kl_coef == 0 no reference model is built."""
    loss_agg: str = "token_mean"
    """Critic-free loss aggregation: token_mean (DAPO) | seq_mean_token_mean (GRPO) | seq_mean_token_sum_norm
    (Dr. GRPO, divides by rows * max_new_tokens)."""
    clip_low: float = 0.2
    """Critic-free ratio clip below 1: ratio >= 1 - clip_low, in [0, 1)."""
    clip_high: Optional[float] = None
    """Critic-free ratio clip above 1 (DAPO clip-higher): ratio <= 1 + clip_high; null = clip_low."""
    ratio_level: str = "token"
    """Critic-free importance ratio per token (PPO/GRPO) or per sequence (GSPO)."""
    reward_funcs: List[str] = dataclasses.field(default_factory=list)
    """Reward functions "package.module:function" (mindrlhf.rewards); their weighted sum (plus the reward
    model's score, when a reward model is given) is the score. With reward_funcs the reward model is optional."""
    reward_weights: Optional[List[float]] = None
    """One weight per reward function; null = 1.0 each."""
    mask_truncated_completions: bool = False
    """Critic-free: responses that hit max_new_tokens without EOS are left out of the loss (TRL's option)."""
    missing_eos_penalty: Optional[float] = None
    """Subtracted from the reward-model score of responses without EOS (TRL's semantics); null disables."""

    # --- schedule -------------------------------------------------------------------------------------------
    rollout_batch_size: int = 8
    """Responses (experiences) per iteration: rollout_batch_size / num_generations prompts, G samples each."""
    mini_batch_size: int = 4
    """Experiences per optimiser step; must divide rollout_batch_size."""
    ppo_epochs: int = 1
    """Passes over one iteration's experiences (each pass reshuffles the mini-batches)."""
    num_iterations: int = 100
    """Iterations (generate -> score -> advantages -> optimise) in the whole run."""

    # --- lengths --------------------------------------------------------------------------------------------
    max_prompt_length: int = 64
    """Prompts are left-truncated/padded to this many tokens."""
    max_new_tokens: int = 64
    """Most response tokens sampled per prompt (generation stops earlier at EOS)."""
    seq_length: int = 128
    """Model sequence length; must be >= max_prompt_length + max_new_tokens."""

    # --- sampling -------------------------------------------------------------------------------------------
    temperature: float = 1.0
    """Sampling temperature (> 0). Log-probs for the KL and the ratio are computed at this same temperature."""
    top_k: int = 0
    """Keep the k most likely tokens when sampling; 0 disables."""
    top_p: float = 1.0
    """Nucleus sampling mass in (0, 1]; 1.0 disables."""

    # --- rewards and advantages -----------------------------------------------------------------------------
    gamma: float = 1.0
    """Discount factor in [0, 1] for GAE."""
    lam: float = 0.95
    """GAE lambda in [0, 1]: 0 = one-step TD, 1 = Monte-Carlo advantage."""
    kl_estimator: str = "k1"
    """Per-token KL(pi || pi_ref) estimator in the reward: k1 (log ratio), k2/mse, k3, abs."""
    init_kl_coef: float = 0.05
    """KL penalty coefficient beta (start value when adaptive_kl); reward_t = -beta * KL_t (+ score at the end)."""
    adaptive_kl: bool = False
    """Adapt beta towards kl_target (Ziegler et al. 2019); otherwise beta stays init_kl_coef."""
    kl_target: float = 6.0
    """Target per-sequence KL (nats) for the adaptive controller (> 0)."""
    kl_horizon: int = 10000
    """Adaptive controller horizon in sequences (> 0): beta *= 1 + clip(KL/target - 1, +-0.2) * B / horizon."""
    normalize_scores: bool = False
    """Normalise reward-model scores with running mean/std (saved with the checkpoint) before score_clip."""
    score_clip: Optional[float] = None
    """Clip (normalised) scores to [-score_clip, score_clip]; null disables; > 0 when set."""
    whiten_advantages: bool = True
    """Whiten advantages over the response tokens of each rollout batch."""

    # --- losses ---------------------------------------------------------------------------------------------
    cliprange: float = 0.2
    """PPO ratio clip epsilon, in (0, 1)."""
    cliprange_value: float = 0.2
    """Value clip: new values stay within +- this of the rollout's values in the clipped term (> 0)."""
    vf_coef: float = 0.1
    """Critic loss weight (>= 0); the critic loss is 0.5 * clipped squared error."""
    entropy_coef: float = 0.0
    """Entropy bonus weight (>= 0): actor loss -= entropy_coef * mean entropy."""
    ptx_coef: float = 0.0
    """Pre-training (ptx) loss weight (>= 0) mixed into the actor loss; 0 disables it (InstructGPT's PPO-ptx)."""

    # --- optimisation ---------------------------------------------------------------------------------------
    actor_lr: float = 1e-6
    """Peak learning rate of the actor (> 0)."""
    critic_lr: float = 5e-6
    """Peak learning rate of the critic (> 0)."""
    # warmup_steps, lr_decay, min_lr_ratio, weight_decay, adam_beta1/2, adam_eps, max_grad_norm: TrainerConfig

    # --- run ------------------------------------------------------------------------------------------------
    seed: int = 1234
    """Seed for sampling, shuffling and initialisation (>= 0)."""
    save_interval: int = 0
    """Save a checkpoint every this many iterations (>= 0); 0 saves only at the end."""
    log_interval: int = 1
    """Log metrics every this many iterations (>= 1)."""
    max_nonfinite_iterations: int = 3
    """Stop with an error after this many iterations in a row with NaN/inf reward-model scores (>= 1); such
    responses are left out of the score statistics and the update meanwhile."""
    metrics_file: str = "metrics.jsonl"
    """Metrics file name inside the run's save_dir (one JSON object per logged iteration)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in (
            "rollout_batch_size",
            "mini_batch_size",
            "ppo_epochs",
            "num_iterations",
            "max_prompt_length",
            "max_new_tokens",
            "seq_length",
            "kl_horizon",
            "log_interval",
            "max_nonfinite_iterations",
        ):
            _require(self, name, getattr(self, name) >= 1, "must be >= 1")
        for name in ("top_k", "save_interval", "seed"):
            _require(self, name, getattr(self, name) >= 0, "must be >= 0")

        _require(
            self,
            "mini_batch_size",
            self.rollout_batch_size % self.mini_batch_size == 0,
            f"must divide rollout_batch_size ({self.rollout_batch_size})",
        )
        _require(
            self,
            "seq_length",
            self.max_prompt_length + self.max_new_tokens <= self.seq_length,
            f"must be >= max_prompt_length + max_new_tokens ({self.max_prompt_length} + {self.max_new_tokens})",
        )

        _require(self, "temperature", self.temperature > 0, "must be > 0")
        _require(self, "top_p", 0 < self.top_p <= 1, "must be in (0, 1]")
        _require(self, "gamma", 0 <= self.gamma <= 1, "must be in [0, 1]")
        _require(self, "lam", 0 <= self.lam <= 1, "must be in [0, 1]")
        _require(
            self,
            "kl_estimator",
            self.kl_estimator in KL_ESTIMATORS,
            f"must be one of {', '.join(KL_ESTIMATORS)}",
        )
        _require(self, "init_kl_coef", self.init_kl_coef >= 0, "must be >= 0")
        _require(
            self,
            "init_kl_coef",
            not (self.adaptive_kl and self.init_kl_coef == 0),
            "must be > 0 with adaptive_kl (the controller multiplies it, so 0 stays 0)",
        )
        _require(self, "kl_target", self.kl_target > 0, "must be > 0")
        _require(self, "score_clip", self.score_clip is None or self.score_clip > 0, "must be > 0 or null")

        _require(self, "cliprange", 0 < self.cliprange < 1, "must be in (0, 1)")
        _require(self, "cliprange_value", self.cliprange_value > 0, "must be > 0")
        for name in ("vf_coef", "entropy_coef", "ptx_coef"):
            _require(self, name, getattr(self, name) >= 0, "must be >= 0")

        for name in ("actor_lr", "critic_lr"):
            _require(self, name, getattr(self, name) > 0, "must be > 0")
        _require(
            self,
            "warmup_steps",
            self.warmup_steps <= self.total_optimizer_steps,
            f"must be <= the run's optimiser steps ({self.total_optimizer_steps} = num_iterations * ppo_epochs * "
            "rollout_batch_size / mini_batch_size)",
        )
        _require(self, "metrics_file", bool(self.metrics_file.strip()), "must not be empty")
        self._check_estimator()

    def _check_estimator(self) -> None:
        """The critic-free fields (issue 16): estimator names, group size, clips, reward functions."""
        _require(
            self,
            "advantage_estimator",
            self.advantage_estimator in ESTIMATORS,
            f"must be one of {', '.join(ESTIMATORS)}",
        )
        _require(self, "num_generations", self.num_generations >= 1, "must be >= 1")
        _require(
            self,
            "num_generations",
            self.rollout_batch_size % self.num_generations == 0,
            f"must divide rollout_batch_size ({self.rollout_batch_size}, the responses per iteration)",
        )
        _require(
            self,
            "num_generations",
            not (self.critic_free and self.advantage_estimator != "dr_grpo" and self.num_generations < 2),
            f"must be >= 2 with advantage_estimator {self.advantage_estimator} (a group needs 2 samples)",
        )
        _require(self, "beta", self.beta >= 0, "must be >= 0")
        _require(
            self,
            "loss_agg",
            self.loss_agg in LOSS_AGGREGATIONS,
            f"must be one of {', '.join(LOSS_AGGREGATIONS)}",
        )
        _require(
            self, "ratio_level", self.ratio_level in RATIO_LEVELS, f"must be one of {', '.join(RATIO_LEVELS)}"
        )
        _require(self, "clip_low", 0 <= self.clip_low < 1, "must be in [0, 1)")
        _require(self, "clip_high", self.clip_high is None or self.clip_high >= 0, "must be >= 0 or null")
        _require(
            self,
            "ptx_coef",
            not (self.critic_free and self.ptx_coef > 0),
            f"must be 0 with advantage_estimator {self.advantage_estimator} (prompt datasets carry no ptx text)",
        )
        _require(
            self,
            "reward_funcs",
            all(isinstance(f, str) and ":" in f for f in self.reward_funcs),
            "must be a list of 'package.module:function' strings",
        )
        _require(
            self,
            "reward_weights",
            self.reward_weights is None or len(self.reward_weights) == len(self.reward_funcs),
            f"must have one weight per reward function ({len(self.reward_funcs)}) or be null",
        )
        _require(
            self,
            "missing_eos_penalty",
            self.missing_eos_penalty is None or self.missing_eos_penalty >= 0,
            "must be >= 0 or null",
        )

    # --- derived --------------------------------------------------------------------------------------------
    @property
    def critic_free(self) -> bool:
        """True for grpo / dr_grpo / rloo: no critic is built, stepped or saved."""
        return self.advantage_estimator != "gae"

    @property
    def needs_reference(self) -> bool:
        """A reference model is built only when some KL uses it (the loss's beta or the reward's KL)."""
        return self.beta > 0 or self.init_kl_coef > 0

    @property
    def prompts_per_iteration(self) -> int:
        """Prompts read per iteration: rollout_batch_size / num_generations."""
        return self.rollout_batch_size // self.num_generations

    @property
    def num_mini_batches(self) -> int:
        """Optimiser steps per PPO epoch."""
        return self.rollout_batch_size // self.mini_batch_size

    @property
    def optimizer_steps_per_iteration(self) -> int:
        return self.ppo_epochs * self.num_mini_batches

    @property
    def total_optimizer_steps(self) -> int:
        """Optimiser steps over the whole run (the length of the learning-rate schedule)."""
        return self.num_iterations * self.optimizer_steps_per_iteration
