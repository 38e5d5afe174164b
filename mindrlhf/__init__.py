"""MindRLHF: MindSpore-native RLHF (SFT, reward model, PPO) for Llama2-class models.

Public API (imported lazily, so `mindrlhf.data` and `mindrlhf.algorithms` stay usable without loading MindSpore):
    mindrlhf.LlamaConfig, mindrlhf.LlamaForCausalLM, mindrlhf.LlamaModel
    mindrlhf.load_checkpoint(model, path), mindrlhf.save_checkpoint(model, path)
    mindrlhf.load_run_config(path), mindrlhf.generate(model, input_ids, attention_mask, ...)
    mindrlhf.PPOConfig, mindrlhf.PPOTrainer, mindrlhf.Experience
    mindrlhf.MindRLHFError: the base of every user-fixable input error (ConfigError, DataError, CheckpointError,
    ...); entry points catch only it, so any other exception is a bug and keeps its traceback.
Entry points (console scripts mindrlhf-train, mindrlhf-sft, ...) live in mindrlhf.cli.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "LlamaConfig": "mindrlhf.models.llama.config",
    "LlamaModel": "mindrlhf.models.llama.model",
    "LlamaForCausalLM": "mindrlhf.models.llama.model",
    "KVCache": "mindrlhf.models.llama.model",
    "load_checkpoint": "mindrlhf.utils.checkpoint",
    "save_checkpoint": "mindrlhf.utils.checkpoint",
    "CheckpointError": "mindrlhf.utils.checkpoint",
    "ConfigError": "mindrlhf.configs.loader",
    "DataError": "mindrlhf.data.schemas",
    "MindRLHFError": "mindrlhf.errors",
    "load_run_config": "mindrlhf.configs.run_config",
    "generate": "mindrlhf.generation",
    "GenerationOutput": "mindrlhf.generation",
    "PPOConfig": "mindrlhf.configs.ppo_config",
    "PPOTrainer": "mindrlhf.trainer.ppo_trainer",
    "Experience": "mindrlhf.trainer.ppo_trainer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mindrlhf' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
