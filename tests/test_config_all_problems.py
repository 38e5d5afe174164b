"""One trainer YAML with several wrong fields reports all of them (issue 15 item 6), not only the first."""

import pytest
import yaml

from mindrlhf.cli.common import Inputs
from mindrlhf.configs.loader import ConfigError
from mindrlhf.configs.ppo_config import PPOConfig
from mindrlhf.configs.train_config import SFTConfig


def _yaml(tmp_path, data):
    path = tmp_path / "trainer.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_three_wrong_fields_in_one_ppo_yaml_are_all_reported(tmp_path):
    # a range check (__post_init__), a wrong type (loader) and a typo'd name (unknown field)
    path = _yaml(tmp_path, {"cliprange": 2.0, "gamma": "high", "clip_range_value": 0.2, "ppo_epochs": 2})
    with pytest.raises(ConfigError) as err:
        PPOConfig.from_yaml(path)
    problems = err.value.problems
    assert len(problems) == 3, problems
    assert any(p.startswith(f"{path}: field 'cliprange': must be in (0, 1), got 2.0") for p in problems)
    assert any(p.startswith(f"{path}: field 'gamma': expected a number, got 'high'") for p in problems)
    assert any(p.startswith(f"{path}: field 'clip_range_value': unknown field") for p in problems)
    assert str(err.value).startswith("3 problems:\n  - ")
    inputs = Inputs()  # an entry point lists them one per line
    assert inputs.attempt(PPOConfig.from_yaml, path) is None and inputs.problems == problems


def test_post_init_checks_go_on_after_the_first_failure(tmp_path):
    path = _yaml(tmp_path, {"learning_rate": -1.0, "batch_size": 0, "adam_beta1": 1.5, "lr_decay": "step"})
    with pytest.raises(ConfigError) as err:
        SFTConfig.from_yaml(path)
    fields = sorted(p.split("field '")[1].split("'")[0] for p in err.value.problems)
    assert fields == ["adam_beta1", "batch_size", "learning_rate", "lr_decay"], err.value.problems


def test_one_problem_is_still_a_plain_error_naming_its_field(tmp_path):
    path = _yaml(tmp_path, {"cliprange": 2.0})
    with pytest.raises(ConfigError) as err:
        PPOConfig.from_yaml(path)
    assert err.value.field == "cliprange" and err.value.problems == [str(err.value)]
    PPOConfig.from_yaml(_yaml(tmp_path, {"cliprange": 0.3}))  # and a good one loads
