"""MindFormers run YAMLs: the model section typed, the rest (parallel, context, loss scale) kept for later stages.

A MindFormers run YAML is what users hand to the launcher as SFT_MODEL_PATH / REWARD_MODEL_PATH. We read
`model.model_config` into `LlamaConfig` and keep the other sections as plain dicts in `RunConfig.raw`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Dict, Optional

import yaml

from mindrlhf.configs.loader import ConfigError, get_section, load_yaml
from mindrlhf.models.llama.config import LlamaConfig
from mindrlhf.models.llama.recompute import RecomputeConfig
from mindrlhf.utils.io import atomic_write

MODEL_SECTION = "model.model_config"

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class RunConfig:
    """One MindFormers run YAML: `model_config` typed; every other section available untyped in `raw`."""

    path: str
    model_config: LlamaConfig
    raw: Dict[str, Any]

    def section(self, dotted: str, default: Any = None) -> Any:
        """`section("runner_wrapper.scale_sense")` -> that mapping, or `default` when absent."""
        value = get_section(self.raw, dotted, self.path, required=False)
        return default if value is None else value

    @property
    def checkpoint_path(self) -> Optional[str]:
        """The weights this YAML names: top-level `load_checkpoint`, else `model_config.checkpoint_name_or_path`.

        Relative paths are taken relative to the YAML's directory (so a YAML and its checkpoint can move
        together), falling back to the working directory. Returns None for random initialisation.
        """
        for key in ("load_checkpoint", None):
            value = self.raw.get(key) if key else self.model_config.checkpoint_name_or_path
            if isinstance(value, str) and value.strip():
                value = os.path.expanduser(value.strip())
                if os.path.isabs(value):
                    return value
                beside = os.path.join(os.path.dirname(os.path.abspath(self.path)), value)
                return (
                    beside if os.path.exists(beside) or not os.path.exists(value) else os.path.abspath(value)
                )
        return None


def load_run_config(path: str) -> RunConfig:
    """Load a MindFormers run YAML; errors name the file and the offending field."""
    raw = load_yaml(path)
    section = get_section(raw, MODEL_SECTION, path)
    if not isinstance(section, dict):
        raise ConfigError("expected a mapping of Llama hyper-parameters", path, MODEL_SECTION)
    model_type = section.get("type", "LlamaConfig")
    if model_type not in ("LlamaConfig", None):
        raise ConfigError(
            f"only LlamaConfig models are supported, got {model_type!r}", path, f"{MODEL_SECTION}.type"
        )
    for name in ("hidden_size", "num_layers", "num_heads", "vocab_size"):
        if name not in section:
            raise ConfigError("required field is missing", path, f"{MODEL_SECTION}.{name}")
    config = LlamaConfig.from_dict(section, source=path, prefix=MODEL_SECTION)
    config.recompute_config = RecomputeConfig.from_run_yaml(raw, path)  # top-level, beside model_config
    pet = section.get("pet_config")
    if pet:
        kind = pet.get("pet_type", "?") if isinstance(pet, dict) else pet
        logger.warning(
            "%s: %s.pet_config (pet_type %s, e.g. LoRA) is NOT applied: mindrlhf trains every weight of the full "
            "model; remove pet_config to silence this warning",
            path,
            MODEL_SECTION,
            kind,
        )
    return RunConfig(path=path, model_config=config, raw=raw)


def run_yaml_dict(config: LlamaConfig, checkpoint: str = "", device_target: str = "CPU") -> Dict[str, Any]:
    """A minimal MindFormers-schema run YAML for `config` whose weights are `checkpoint`."""
    model_config = {"type": "LlamaConfig"}
    model_config.update({k: v for k, v in config.to_dict().items() if v is not None})
    model_config["checkpoint_name_or_path"] = checkpoint
    recompute = {"recompute_config": config.recompute_config.to_dict()} if config.recompute_config else {}
    return {
        "seed": 0,
        "run_mode": "train",
        "load_checkpoint": checkpoint,
        "context": {"mode": 0, "device_target": device_target, "device_id": 0},
        "use_parallel": False,
        "parallel": {"parallel_mode": 0, "gradients_mean": True, "full_batch": False},
        "parallel_config": {
            "data_parallel": 1,
            "model_parallel": 1,
            "pipeline_stage": 1,
            "micro_batch_num": 1,
            "vocab_emb_dp": True,
            "use_seq_parallel": False,
        },
        "runner_wrapper": {
            "type": "MFTrainOneStepCell",
            "scale_sense": {
                "type": "DynamicLossScaleUpdateCell",
                "loss_scale_value": 1.0 if device_target == "CPU" else 65536.0,
                "scale_factor": 2,
                "scale_window": 1000,
            },
            "use_clip_grad": True,
        },
        "model": {"model_config": model_config, "arch": {"type": "LlamaForCausalLM"}},
        **recompute,
    }


def write_run_yaml(config: LlamaConfig, path: str, checkpoint: str = "", device_target: str = "CPU") -> str:
    """Write a MindFormers-schema run YAML atomically; `checkpoint` is stored relative to the YAML when beside it."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if checkpoint and os.path.isabs(checkpoint) and os.path.dirname(checkpoint) == directory:
        checkpoint = os.path.basename(checkpoint)
    text = yaml.safe_dump(run_yaml_dict(config, checkpoint, device_target), sort_keys=False)
    with atomic_write(path) as f:
        f.write(text)
    return path
