"""MindFormers' `recompute_config` for our Llama cells: which decoder layers keep no activations for backward.

Recomputation (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost") trades compute for memory: a
recomputed cell keeps only its inputs; backward reruns its forward to get the activations it needs. MindFormers
fits 7B on a 64 GB NPU with it. Its run YAML says (top-level `recompute_config`, or `parallel_config.recompute` in
older YAMLs), with these field names:

    recompute_config:
      recompute: True                  # every decoder layer (Cell.recompute() on the layer)
      select_recompute: False          # only the attention scores / softmax / probs of each layer
      parallel_optimizer_comm_recompute: False
      mp_comm_recompute: True
      recompute_slice_activation: True

`recompute` and `select_recompute` are a bool or, with pipeline stages, a list with one count per stage: in stage s
(layers `[s * L / S, (s + 1) * L / S)`) the first `list[s]` layers are recomputed (MindFormers'
`v1.5.0_finetune_llama2_70b_bf16_64p.yaml`: `select_recompute: [10, 8, 6, 4, 2, 0, 0, 0]`). A layer under full
recompute is not also selected. The communication fields only matter under model / optimizer parallelism; they are
parsed and kept. Recompute changes no value: forward-only graphs (generation, scoring) are unaffected and the
gradients are identical (tests/test_recompute.py).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, List, Mapping, Optional, Union

from mindrlhf.configs.loader import ConfigError, dataclass_from_dict

logger = logging.getLogger(__name__)

RECOMPUTE_SECTION = "recompute_config"
LEGACY_SECTION = "parallel_config.recompute"


@dataclasses.dataclass
class RecomputeConfig:
    """MindFormers' `TransformerRecomputeConfig` fields (a run YAML's `recompute_config`)."""

    recompute: Union[bool, List[int]] = False
    select_recompute: Union[bool, List[int]] = False
    parallel_optimizer_comm_recompute: bool = False
    mp_comm_recompute: bool = True
    recompute_slice_activation: bool = False

    def __post_init__(self):
        for name in ("recompute", "select_recompute"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                if not value or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in value):
                    raise ConfigError(
                        f"expected true/false or a list of layer counts >= 0 (one per pipeline stage), "
                        f"got {value!r}",
                        field=name,
                    )

    @property
    def enabled(self) -> bool:
        return bool(self.layers("recompute", 1 << 30) or self.layers("select_recompute", 1 << 30))

    def layers(self, name: str, num_layers: int) -> List[int]:
        """Indices of the layers `name` ('recompute' or 'select_recompute') covers in a model of `num_layers`."""
        value = getattr(self, name)
        if isinstance(value, bool):
            return list(range(num_layers)) if value else []
        stages = len(value)
        per_stage = max(num_layers // stages, 1)
        out = []
        for stage, count in enumerate(value):
            start = stage * per_stage
            end = num_layers if stage == stages - 1 else min(start + per_stage, num_layers)
            out.extend(range(start, min(start + count, end)))
        return out

    @classmethod
    def from_run_yaml(cls, raw: Mapping[str, Any], source: Optional[str] = None) -> Optional[RecomputeConfig]:
        """The `recompute_config` of a MindFormers run YAML (dict), or `parallel_config.recompute` of an older
        one (a bool or the same mapping); None when neither is there. Errors name the file and the field."""
        section, prefix = raw.get(RECOMPUTE_SECTION), RECOMPUTE_SECTION
        if section is None and isinstance(raw.get("parallel_config"), Mapping):
            section, prefix = raw["parallel_config"].get("recompute"), LEGACY_SECTION
        if section is None:
            return None
        if isinstance(section, bool):  # parallel_config.recompute: True
            return cls(recompute=section)
        if not isinstance(section, Mapping):
            raise ConfigError(
                f"expected a mapping (recompute, select_recompute, ...), got {section!r}", source, prefix
            )
        return dataclass_from_dict(cls, dict(section), source=source, prefix=prefix, allow_unknown=True)

    def to_dict(self):
        return dataclasses.asdict(self)


def apply_recompute(layers, config: Optional[RecomputeConfig], attention_of=None) -> dict:
    """Mark `layers` (a CellList of decoder layers) for recomputation per `config`.

    Full recompute: `Cell.recompute()` on the layer. Select recompute: on the layer's core attention (scores,
    mask, softmax, probs @ V: the `[B, nh, T, T]` activations), found by `attention_of(layer)`.
    Returns `{"recompute": [layer indices], "select_recompute": [...]}` (what was applied).
    """
    applied = {"recompute": [], "select_recompute": []}
    if config is None:
        return applied
    n = len(layers)
    full = config.layers("recompute", n)
    select = [i for i in config.layers("select_recompute", n) if i not in full]
    kwargs = {"mp_comm_recompute": config.mp_comm_recompute}
    for i in full:
        layers[i].recompute(**kwargs)
    for i in select:
        (attention_of(layers[i]) if attention_of else layers[i]).recompute(**kwargs)
    applied.update(recompute=full, select_recompute=select)
    if full or select:
        logger.debug("recompute: full on layers %s, select (attention) on layers %s", full, select)
    return applied


def recomputed(cell) -> bool:
    """Whether `cell` was marked for recomputation (MindSpore sets `_has_config_recompute` on the cell)."""
    return bool(getattr(cell, "_has_config_recompute", False))
