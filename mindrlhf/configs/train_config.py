"""SFTConfig and RMConfig: the hyper-parameters of the supervised and reward-model trainers (PPOConfig's shape).

Load with `SFTConfig.from_yaml("model_configs/sft_config.yaml", overrides=["--learning_rate", "1e-4"])`. Unknown
keys are errors. The model (and its init checkpoint, loss-scale settings) comes from the MindFormers run YAML
given to the entry point, not from here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Iterable, Mapping, Optional, Union

from mindrlhf.configs.loader import (
    ConfigError,
    apply_overrides,
    dataclass_from_dict,
    load_yaml,
    parse_overrides,
)

LR_DECAYS = ("cosine", "linear", "constant")
SFT_MODES = ("sft", "lm")


@dataclasses.dataclass
class _TrainConfig:
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
    warmup_steps: int = 0
    """Linear warm-up in optimiser steps (>= 0, at most the run's steps)."""
    lr_decay: str = "cosine"
    """Schedule after warm-up: cosine, linear or constant."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak, in [0, 1] (ignored by 'constant')."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay on matrices (>= 0)."""
    adam_beta1: float = 0.9
    """Adam beta1, in [0, 1)."""
    adam_beta2: float = 0.95
    """Adam beta2, in [0, 1)."""
    adam_eps: float = 1e-8
    """Adam epsilon (> 0)."""
    max_grad_norm: Optional[float] = 1.0
    """Clip the global gradient norm to this (> 0); null disables."""

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
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"must be a finite number, got {value}", field=f.name)
        for name in ("batch_size", "epochs", "log_interval"):
            _require(self, name, getattr(self, name) >= 1, "must be >= 1")
        for name in ("max_steps", "warmup_steps", "save_interval", "seed"):
            _require(self, name, getattr(self, name) >= 0, "must be >= 0")
        for name in ("learning_rate", "adam_eps"):
            _require(self, name, getattr(self, name) > 0, "must be > 0")
        _require(self, "weight_decay", self.weight_decay >= 0, "must be >= 0")
        _require(self, "lr_decay", self.lr_decay in LR_DECAYS, f"must be one of {', '.join(LR_DECAYS)}")
        _require(self, "min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "must be in [0, 1]")
        for name in ("adam_beta1", "adam_beta2"):
            _require(self, name, 0 <= getattr(self, name) < 1, "must be in [0, 1)")
        _require(
            self, "max_grad_norm", self.max_grad_norm is None or self.max_grad_norm > 0, "must be > 0 or null"
        )
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

    # --- I/O ------------------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: Optional[str] = None):
        """Build from a flat mapping; unknown keys and mistyped values raise ConfigError naming the field."""
        return dataclass_from_dict(cls, dict(data), source=source, allow_unknown=False)

    @classmethod
    def from_yaml(cls, path: Optional[str], overrides: Union[Iterable[str], Mapping[str, Any], None] = None):
        """Load a flat YAML of fields (None: defaults only), then apply `--key value` overrides (typed by field)."""
        data = load_yaml(path) if path else {}
        if overrides:
            parsed = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
            data = apply_overrides(data, parsed)
        return cls.from_dict(data, source=path or "<overrides>")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


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


def _require(config: Any, name: str, ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(f"{message}, got {getattr(config, name)!r}", field=name)
