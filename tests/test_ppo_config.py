"""PPOConfig: the shipped YAML loads, validation errors name the field, typos are rejected, overrides are typed."""

import dataclasses
import pathlib

import pytest
import yaml

from mindrlhf.configs import ppo_config
from mindrlhf.configs.loader import ConfigError
from mindrlhf.configs.ppo_config import PPOConfig

YAML = pathlib.Path(__file__).resolve().parents[1] / "model_configs" / "ppo_config.yaml"


def write_yaml(tmp_path, data):
    path = tmp_path / "ppo.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_shipped_yaml_loads_and_lists_every_field():
    cfg = PPOConfig.from_yaml(str(YAML))
    assert cfg.rollout_batch_size == 8 and cfg.mini_batch_size == 4 and cfg.ppo_epochs == 2
    assert cfg.max_prompt_length + cfg.max_new_tokens <= cfg.seq_length
    assert cfg.ptx_coef == 0.0
    assert cfg.score_clip is None
    assert isinstance(cfg.actor_lr, float) and cfg.actor_lr == 1e-5
    assert cfg.total_optimizer_steps == 20 * 2 * 2
    keys = set(yaml.safe_load(YAML.read_text()))
    assert keys == {f.name for f in dataclasses.fields(PPOConfig)}


def test_defaults_are_valid_and_ptx_off():
    cfg = PPOConfig()
    assert cfg.ptx_coef == 0.0
    assert cfg.kl_estimator == "k1"
    assert cfg.to_dict()["cliprange"] == 0.2


def test_every_field_is_documented():
    from mindrlhf.configs import trainer_base  # the shared optimiser fields live there

    source = pathlib.Path(ppo_config.__file__).read_text() + pathlib.Path(trainer_base.__file__).read_text()
    for f in dataclasses.fields(PPOConfig):
        head = f"    {f.name}: "
        assert head in source
        after = source.split(head, 1)[1].split("\n", 2)[1].strip()
        assert after.startswith('"""') and len(after) > 10, f"field {f.name} has no docstring"


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"mini_batch_size": 3}, "mini_batch_size"),  # 8 % 3 != 0
        ({"rollout_batch_size": 0}, "rollout_batch_size"),
        ({"max_new_tokens": 40}, "seq_length"),  # 32 + 40 > 64
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"gamma": 1.5}, "gamma"),
        ({"lam": -0.1}, "lam"),
        ({"kl_estimator": "k4"}, "kl_estimator"),
        ({"init_kl_coef": -0.1}, "init_kl_coef"),
        ({"adaptive_kl": True, "init_kl_coef": 0.0}, "init_kl_coef"),
        ({"kl_target": 0.0}, "kl_target"),
        ({"kl_horizon": 0}, "kl_horizon"),
        ({"score_clip": 0.0}, "score_clip"),
        ({"cliprange": 1.0}, "cliprange"),
        ({"cliprange": 0.0}, "cliprange"),
        ({"cliprange_value": 0.0}, "cliprange_value"),
        ({"vf_coef": -1.0}, "vf_coef"),
        ({"ptx_coef": -0.5}, "ptx_coef"),
        ({"entropy_coef": -0.01}, "entropy_coef"),
        ({"actor_lr": 0.0}, "actor_lr"),
        ({"critic_lr": -1e-5}, "critic_lr"),
        ({"warmup_steps": 81}, "warmup_steps"),  # the run has 80 optimiser steps
        ({"lr_decay": "exponential"}, "lr_decay"),
        ({"min_lr_ratio": 1.5}, "min_lr_ratio"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"adam_beta1": 1.0}, "adam_beta1"),
        ({"adam_beta2": -0.1}, "adam_beta2"),
        ({"adam_eps": 0.0}, "adam_eps"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
        ({"save_interval": -1}, "save_interval"),
        ({"log_interval": 0}, "log_interval"),
        ({"seed": -1}, "seed"),
        ({"metrics_file": ""}, "metrics_file"),
        ({"kl_target": float("nan")}, "kl_target"),
        ({"cliprange": "wide"}, "cliprange"),  # wrong type, caught by the loader
        ({"adaptive_kl": "maybe"}, "adaptive_kl"),
    ],
)
def test_validation_error_names_field_and_file(tmp_path, overrides, field):
    data = yaml.safe_load(YAML.read_text())
    data.update(overrides)
    path = write_yaml(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        PPOConfig.from_yaml(path)
    assert info.value.field == field
    assert info.value.source == path
    assert f"field '{field}'" in str(info.value)


def test_typo_key_is_rejected(tmp_path):
    data = yaml.safe_load(YAML.read_text())
    data["clip_range"] = 0.3
    path = write_yaml(tmp_path, data)
    with pytest.raises(ConfigError, match="unknown field") as info:
        PPOConfig.from_yaml(path)
    assert info.value.field == "clip_range"
    with pytest.raises(ConfigError, match="unknown field"):
        PPOConfig.from_yaml(str(YAML), overrides=["--clip_range", "0.3"])


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        PPOConfig.from_yaml(str(tmp_path / "nope.yaml"))


def test_cli_overrides_are_typed():
    cfg = PPOConfig.from_yaml(
        str(YAML),
        overrides=[
            "--cliprange",
            "0.3",
            "--adaptive_kl",
            "true",
            "--kl-horizon=500",
            "--score_clip",
            "5",
            "--actor_lr",
            "3e-6",
        ],
    )
    assert cfg.cliprange == 0.3 and isinstance(cfg.cliprange, float)
    assert cfg.adaptive_kl is True
    assert cfg.kl_horizon == 500 and isinstance(cfg.kl_horizon, int)
    assert cfg.score_clip == 5.0 and isinstance(cfg.score_clip, float)
    assert cfg.actor_lr == 3e-6 and isinstance(cfg.actor_lr, float)


def test_dict_overrides_and_null():
    cfg = PPOConfig.from_yaml(
        str(YAML), overrides={"max_grad_norm": "null", "kl_estimator": "k3", "gamma": 0.99}
    )
    assert cfg.max_grad_norm is None
    assert cfg.kl_estimator == "k3"
    assert cfg.gamma == 0.99


def test_override_that_breaks_validation_names_field():
    with pytest.raises(ConfigError) as info:
        PPOConfig.from_yaml(str(YAML), overrides=["--mini_batch_size", "5"])
    assert info.value.field == "mini_batch_size"
    assert "must divide rollout_batch_size (8)" in str(info.value)


def test_derived_step_counts():
    cfg = PPOConfig(rollout_batch_size=12, mini_batch_size=4, ppo_epochs=3, num_iterations=5)
    assert cfg.num_mini_batches == 3
    assert cfg.optimizer_steps_per_iteration == 9
    assert cfg.total_optimizer_steps == 45
