"""DPOConfig: the hyper-parameters of the DPO trainer (SFTConfig/RMConfig's shape, TRL's `DPOConfig` names).

Load with `DPOConfig.from_yaml("model_configs/dpo_config.yaml", overrides=["--beta", "0.2"])`. Unknown keys are
errors. The policy (and the frozen reference, the same SFT weights) come from the MindFormers run YAML given to
the entry point, not from here.
"""

from __future__ import annotations

import dataclasses

from mindrlhf.algorithms.dpo_math import DPO_LOSS_TYPES
from mindrlhf.configs.train_config import _TrainConfig
from mindrlhf.configs.trainer_base import require as _require

__all__ = ["DPO_LOSS_TYPES", "DPOConfig"]


@dataclasses.dataclass
class DPOConfig(_TrainConfig):
    """Direct preference optimisation (Rafailov et al. 2023) of a causal LM on comparison pairs."""

    batch_size: int = 8
    """Comparison pairs per optimiser step (the policy sees 2 * batch_size sequences in one forward)."""
    learning_rate: float = 5e-5
    """Peak learning rate (> 0). TRL's default is 1e-6 for billion-parameter models; tiny models need more."""
    beta: float = 0.1
    """Strength of the implicit KL constraint to the reference (> 0); the implicit reward is
    beta * (log pi(y|x) - log pi_ref(y|x))."""
    loss_type: str = "sigmoid"
    """'sigmoid' (DPO, with label_smoothing: cDPO), 'ipo' (IPO; log-probs averaged over response tokens, as
    TRL does) or 'hinge' (SLiC)."""
    label_smoothing: float = 0.0
    """cDPO: the assumed probability that a preference label is flipped, in [0, 0.5]; 'sigmoid' only."""
    precompute_ref_log_probs: bool = False
    """Compute the reference log-probs of every training pair once before the first step (then the reference
    model is released) instead of one reference forward per batch. Same losses either way."""
    eval_fraction: float = 0.1
    """Fraction of the comparison rows held out for evaluation, in [0, 1); ignored when the entry point gets
    --eval_dataset. The split is a seeded permutation of the rows (fixed for the run)."""
    eval_interval: int = 0
    """Evaluate every this many steps (>= 0); 0 evaluates only at the end."""
    eval_batch_size: int = 32
    """Pairs per evaluation (and reference pre-computation) forward (>= 1); the last batch is padded, the
    padding is not counted."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self, "beta", self.beta > 0, "must be > 0")
        _require(
            self, "loss_type", self.loss_type in DPO_LOSS_TYPES, f"must be one of {', '.join(DPO_LOSS_TYPES)}"
        )
        _require(self, "label_smoothing", 0 <= self.label_smoothing <= 0.5, "must be in [0, 0.5]")
        _require(
            self,
            "label_smoothing",
            self.label_smoothing == 0 or self.loss_type == "sigmoid",
            f"applies to loss_type 'sigmoid' (cDPO) only, not {self.loss_type!r}; set it to 0",
        )
        _require(self, "eval_fraction", 0 <= self.eval_fraction < 1, "must be in [0, 1)")
        _require(self, "eval_interval", self.eval_interval >= 0, "must be >= 0")
        _require(self, "eval_batch_size", self.eval_batch_size >= 1, "must be >= 1")
