"""YAML configs: MindFormers schema accepted, errors name the file and the field."""

import pytest
from conftest import LLAMA2_7B_YAML, TINY_YAML

from mindrlhf.configs.loader import ConfigError, apply_overrides, parse_overrides
from mindrlhf.configs.run_config import load_run_config, write_run_yaml


def _yaml(tmp_path, model_config: str, extra: str = ""):
    path = tmp_path / "run.yaml"
    path.write_text(
        extra
        + "model:\n  model_config:\n"
        + "".join(f"    {line}\n" for line in model_config.strip().splitlines())
    )
    return str(path)


BASE = "type: LlamaConfig\nhidden_size: 64\nnum_layers: 2\nnum_heads: 4\nvocab_size: 100\n"


def test_7b_yaml_keeps_all_sections():
    run = load_run_config(LLAMA2_7B_YAML)
    c = run.model_config
    assert (c.hidden_size, c.num_layers, c.num_heads, c.vocab_size, c.ffn_hidden_size) == (
        4096,
        32,
        32,
        32000,
        11008,
    )
    assert c.compute_dtype == "float16" and c.rms_norm_eps == 1e-5 and c.theta == 10000.0
    assert run.section("parallel_config")["model_parallel"] == 8
    assert run.section("runner_wrapper.scale_sense")["loss_scale_value"] == 4096
    assert run.section("context")["device_target"] == "Ascend"
    assert run.checkpoint_path is None


def test_unknown_mindformers_keys_are_accepted(tmp_path):
    c = load_run_config(
        _yaml(tmp_path, BASE + "use_flash_attention: False\nfine_grain_interleave: 2\n")
    ).model_config
    assert c.hidden_size == 64


@pytest.mark.parametrize(
    "line, field, words",
    [
        ("num_heads: 'four'", "model.model_config.num_heads", "expected an integer"),
        ("num_heads: 5", "model.model_config.num_heads", "does not divide hidden_size"),
        ("n_kv_heads: 3", "model.model_config.n_kv_heads", "divide num_heads"),
        ("rms_norm_eps: -1.0", "model.model_config.rms_norm_eps", "positive"),
        ("compute_dtype: 'float8'", "model.model_config.compute_dtype", "unknown dtype"),
        ("use_past: 'maybe'", "model.model_config.use_past", "true/false"),
        ("pad_token_id: 100", "model.model_config.pad_token_id", "outside the vocabulary"),
    ],
)
def test_bad_values_name_file_and_field(tmp_path, line, field, words):
    path = _yaml(tmp_path, BASE + line)
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    msg = str(err.value)
    assert path in msg and f"field '{field}'" in msg and words in msg


def test_missing_required_field_and_section(tmp_path):
    path = _yaml(tmp_path, "type: LlamaConfig\nhidden_size: 64\nnum_layers: 2\nvocab_size: 100\n")
    with pytest.raises(ConfigError, match=r"field 'model.model_config.num_heads': required field is missing"):
        load_run_config(path)
    other = tmp_path / "empty.yaml"
    other.write_text("seed: 0\n")
    with pytest.raises(ConfigError, match=r"empty.yaml: field 'model': missing section"):
        load_run_config(str(other))


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  model_config:\n    hidden_size: [64\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: invalid YAML at line \d+"):
        load_run_config(str(path))
    with pytest.raises(ConfigError, match="file not found"):
        load_run_config(str(tmp_path / "nope.yaml"))


def test_yaml_written_by_us_reads_back(tmp_path):
    config = load_run_config(TINY_YAML).model_config
    ckpt = tmp_path / "w.ckpt"
    ckpt.write_bytes(b"")
    path = write_run_yaml(config, str(tmp_path / "out.yaml"), checkpoint=str(ckpt))
    run = load_run_config(path)
    assert run.model_config == config.__class__(**{**config.to_dict(), "checkpoint_name_or_path": "w.ckpt"})
    assert run.checkpoint_path == str(ckpt)  # stored relative, resolved beside the YAML


def test_overrides_are_typed_through_the_dataclass():
    data = apply_overrides(
        {"model": {"model_config": {"num_layers": 2}}},
        parse_overrides(["--model.model_config.num_layers", "3", "--seed=7"]),
    )
    assert data["model"]["model_config"]["num_layers"] == 3 and data["seed"] == 7
    with pytest.raises(ConfigError, match="has no value"):
        parse_overrides(["--lr"])
