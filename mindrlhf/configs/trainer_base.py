"""What every trainer config shares: YAML loading with overrides, finiteness, and the AdamW + schedule fields.

`PPOConfig`, `SFTConfig` and `RMConfig` subclass `TrainerConfig`; each adds its own fields (with defaults, so
dataclass inheritance keeps working) and its own checks after `super().__post_init__()`.
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
    report_problem,
)

LR_DECAYS = ("cosine", "linear", "constant")


def require(config: Any, name: str, ok: bool, message: str) -> None:
    """Raise ConfigError naming field `name` (and its value) unless `ok`."""
    if not ok:  # recorded, not raised, while a YAML is loaded: all wrong fields are reported together
        report_problem(ConfigError(f"{message}, got {getattr(config, name)!r}", field=name))


@dataclasses.dataclass
class TrainerConfig:
    """Optimiser and schedule fields common to every trainer, plus the one way to load a trainer config."""

    warmup_steps: int = 0
    """Linear warm-up, in optimiser steps (>= 0, at most the run's optimiser steps)."""
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
    """Clip the global gradient norm of each model to this (> 0); null disables."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                report_problem(ConfigError(f"must be a finite number, got {value}", field=f.name))
        require(self, "warmup_steps", self.warmup_steps >= 0, "must be >= 0")
        require(self, "weight_decay", self.weight_decay >= 0, "must be >= 0")
        require(self, "adam_eps", self.adam_eps > 0, "must be > 0")
        require(self, "lr_decay", self.lr_decay in LR_DECAYS, f"must be one of {', '.join(LR_DECAYS)}")
        require(self, "min_lr_ratio", 0 <= self.min_lr_ratio <= 1, "must be in [0, 1]")
        for name in ("adam_beta1", "adam_beta2"):
            require(self, name, 0 <= getattr(self, name) < 1, "must be in [0, 1)")
        require(
            self, "max_grad_norm", self.max_grad_norm is None or self.max_grad_norm > 0, "must be > 0 or null"
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: Optional[str] = None):
        """Build from a flat mapping; unknown keys and mistyped values raise ConfigError naming the field."""
        return dataclass_from_dict(cls, dict(data), source=source, allow_unknown=False)

    @classmethod
    def from_yaml(cls, path: Optional[str], overrides: Union[Iterable[str], Mapping[str, Any], None] = None):
        """Load a flat YAML of fields (None: defaults only), then apply overrides.

        `overrides` is either a `["--key", "value", "--key=value"]` list (as from the command line) or a
        `{"key": value}` mapping; string values are parsed as YAML scalars and then typed by the field
        (`--cliprange 0.3` -> 0.3, `--adaptive_kl true` -> True, `--score_clip null` -> None).
        """
        data = load_yaml(path) if path else {}
        if overrides:
            parsed = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
            data = apply_overrides(data, parsed)
        return cls.from_dict(data, source=path or "<overrides>")

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict of every field (logged and saved next to the run's checkpoints)."""
        return dataclasses.asdict(self)
