"""The critic-free PPOConfig fields (issue 16): the shipped grpo_config.yaml, defaults, and each check naming its
field; train.py's default YAML follows the estimator given on the command line."""

import dataclasses
import pathlib

import pytest
import yaml

from mindrlhf.cli.train import config_overrides, default_kind, parse_args
from mindrlhf.configs.loader import ConfigError
from mindrlhf.configs.ppo_config import PPOConfig

YAML = pathlib.Path(__file__).resolve().parents[1] / "model_configs" / "grpo_config.yaml"


def test_shipped_grpo_yaml_lists_every_field_and_builds_no_critic():
    cfg = PPOConfig.from_yaml(str(YAML))
    assert set(yaml.safe_load(YAML.read_text())) == {f.name for f in dataclasses.fields(PPOConfig)}
    assert cfg.critic_free and cfg.advantage_estimator == "grpo" and cfg.num_generations == 4
    assert cfg.prompts_per_iteration == 8 and cfg.num_mini_batches == 1  # one update per generation
    assert cfg.needs_reference  # beta 0.04
    assert not PPOConfig.from_yaml(str(YAML), {"beta": 0.0}).needs_reference  # init_kl_coef is 0 too
    assert PPOConfig.from_yaml(str(YAML), {"advantage_estimator": "gae"}).critic_free is False


def test_defaults_keep_ppo():
    cfg = PPOConfig()
    assert cfg.advantage_estimator == "gae" and not cfg.critic_free and cfg.num_generations == 1
    assert cfg.needs_reference  # init_kl_coef 0.05
    assert cfg.reward_funcs == [] and cfg.clip_high is None


@pytest.mark.parametrize(
    "fields,field,message",
    [
        ({"advantage_estimator": "ppo"}, "advantage_estimator", "must be one of gae, grpo, dr_grpo, rloo"),
        ({"num_generations": 3}, "num_generations", "must divide rollout_batch_size (8"),
        ({"advantage_estimator": "rloo", "num_generations": 1}, "num_generations", "must be >= 2"),
        ({"beta": -0.1}, "beta", "must be >= 0"),
        ({"loss_agg": "sum"}, "loss_agg", "must be one of token_mean"),
        ({"ratio_level": "seq"}, "ratio_level", "must be one of token, sequence"),
        ({"clip_low": 1.0}, "clip_low", "must be in [0, 1)"),
        ({"clip_high": -0.1}, "clip_high", "must be >= 0 or null"),
        ({"advantage_estimator": "grpo", "num_generations": 2, "ptx_coef": 0.1}, "ptx_coef", "must be 0"),
        ({"reward_funcs": ["no_colon"]}, "reward_funcs", "'package.module:function'"),
        ({"reward_funcs": ["a:b"], "reward_weights": [1.0, 2.0]}, "reward_weights", "one weight per reward"),
        ({"missing_eos_penalty": -1.0}, "missing_eos_penalty", "must be >= 0 or null"),
    ],
)
def test_each_bad_field_is_named(fields, field, message):
    with pytest.raises(ConfigError) as err:
        PPOConfig.from_dict(fields)
    assert f"field '{field}'" in str(err.value) and message in str(err.value), str(err.value)


def test_dr_grpo_allows_one_generation_and_the_command_line_lists():
    assert PPOConfig(advantage_estimator="dr_grpo", num_generations=1).critic_free
    args, rest = parse_args(
        ["--sft_model_path", "s.yaml", "--dataset_dir", "d", "--save_dir", "o", "--reward_funcs", "a:f", "b:g",
         "--reward_weights", "1", "0.5", "--advantage_estimator", "rloo", "--num_generations", "2"]
    )  # fmt: skip
    mapping = config_overrides(args, rest)
    assert mapping["reward_funcs"] == ["a:f", "b:g"] and mapping["reward_weights"] == [1.0, 0.5]
    cfg = PPOConfig.from_yaml(str(YAML), mapping)
    assert cfg.advantage_estimator == "rloo" and cfg.reward_funcs == ["a:f", "b:g"]
    assert default_kind(mapping) == "grpo" and default_kind({}) == "ppo" and default_kind(None) == "ppo"
