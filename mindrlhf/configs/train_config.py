"""SFTConfig and RMConfig: the hyper-parameters of the supervised and reward-model trainers (PPOConfig's shape).

Load with `SFTConfig.from_yaml("model_configs/sft_config.yaml", overrides=["--learning_rate", "1e-4"])`. Unknown
keys are errors. The model (and its init checkpoint, loss-scale settings) comes from the MindFormers run YAML
given to the entry point, not from here.
"""

from __future__ import annotations

import dataclasses

from mindrlhf.configs.trainer_base import TrainerConfig
from mindrlhf.configs.trainer_base import require as _require

SFT_MODES = ("sft", "lm")


@dataclasses.dataclass
class _TrainConfig(TrainerConfig):
    """Fields shared by the SFT and reward-model trainers (one optimiser, one model, fixed-shape batches)."""

    # --- schedule -------------------------------------------------------------------------------------------
    batch_size: int = 32
    """Rows per optimiser step (the last partial batch of each epoch is dropped: one compiled shape)."""
    epochs: int = 1
    """Passes over the training data (each epoch reshuffles); ignored when max_steps > 0."""
    max_steps: int = 0
    """Optimiser steps in the whole run (>= 0); 0 means epochs * batches per epoch."""

    # --- optimisation ---------------------------------------------------------------------------------------
    learning_rate: float = 3e-4
    """Peak learning rate (> 0)."""
    # warmup_steps, lr_decay, min_lr_ratio, weight_decay, adam_beta1/2, adam_eps, max_grad_norm: TrainerConfig

    # --- run ------------------------------------------------------------------------------------------------
    seed: int = 1234
    """Seed for initialisation and data order (>= 0)."""
    shuffle: bool = True
    """Reshuffle rows every epoch (order is a pure function of seed and epoch, so resume is exact)."""
    log_interval: int = 10
    """Read back and log the loss every this many steps (>= 1); the only per-step host sync."""
    save_interval: int = 0
    """Save a resumable checkpoint every this many steps (>= 0); 0 saves only at the end."""
    metrics_file: str = "metrics.jsonl"
    """Metrics file name inside save_dir (one JSON object per logged step)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("batch_size", "epochs", "log_interval"):
            _require(self, name, getattr(self, name) >= 1, "must be >= 1")
        for name in ("max_steps", "save_interval", "seed"):
            _require(self, name, getattr(self, name) >= 0, "must be >= 0")
        _require(self, "learning_rate", self.learning_rate > 0, "must be > 0")
        _require(
            self,
            "warmup_steps",
            self.max_steps == 0 or self.warmup_steps <= self.max_steps,
            f"must be <= max_steps ({self.max_steps})",
        )
        _require(self, "metrics_file", bool(self.metrics_file.strip()), "must not be empty")

    def total_steps(self, batches_per_epoch: int) -> int:
        """Optimiser steps of the run (the length of the learning-rate schedule)."""
        return self.max_steps or self.epochs * batches_per_epoch


@dataclasses.dataclass
class SFTConfig(_TrainConfig):
    """Supervised fine-tuning (and plain language-model pre-training) of a LlamaForCausalLM."""

    mode: str = "sft"
    """'sft': next-token loss on the response only (the dataset's loss_mask); 'lm': on every real token
    (attention_mask as the loss mask), for pre-training a model from scratch on a corpus."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self, "mode", self.mode in SFT_MODES, f"must be one of {', '.join(SFT_MODES)}")


@dataclasses.dataclass
class RMConfig(_TrainConfig):
    """Reward model: pairwise loss -log sigmoid(r_chosen - r_rejected) (Ouyang et al. 2022, eq. 1)."""

    batch_size: int = 16
    """Comparison pairs per optimiser step (the model sees 2 * batch_size sequences in one forward)."""
    learning_rate: float = 1e-4
    """Peak learning rate (> 0)."""
    eval_fraction: float = 0.1
    """Fraction of the comparison rows held out for pairwise accuracy, in [0, 1); ignored when the entry point
    gets --eval_dataset. The split is a seeded permutation of the rows (fixed for the run)."""
    eval_interval: int = 0
    """Evaluate every this many steps (>= 0); 0 evaluates only at the end."""
    eval_batch_size: int = 32
    """Pairs per evaluation forward (>= 1); the last batch is padded, the padding is not counted."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self, "eval_fraction", 0 <= self.eval_fraction < 1, "must be in [0, 1)")
        _require(self, "eval_interval", self.eval_interval >= 0, "must be >= 0")
        _require(self, "eval_batch_size", self.eval_batch_size >= 1, "must be >= 1")
