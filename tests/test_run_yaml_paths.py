"""Relative checkpoint paths in a run YAML resolve from the YAML's folder first, then from the working directory."""

import os

from mindrlhf.configs.run_config import load_run_config

YAML = """load_checkpoint: '{ckpt}'
model:
  model_config:
    hidden_size: 32
    num_layers: 1
    num_heads: 4
    vocab_size: 50
"""


def test_relative_load_checkpoint_resolves_beside_the_yaml_from_any_cwd(tmp_path, monkeypatch):
    (tmp_path / "stage").mkdir()
    (tmp_path / "stage" / "model.ckpt").write_bytes(b"")
    (tmp_path / "stage" / "model.yaml").write_text(YAML.format(ckpt="model.ckpt"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = load_run_config(os.path.join("..", "stage", "model.yaml"))
    assert run.checkpoint_path == str(tmp_path / "stage" / "model.ckpt")


def test_falls_back_to_the_working_directory_and_keeps_absolute_paths(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "weights.ckpt").write_bytes(b"")
    (tmp_path / "cfg" / "a.yaml").write_text(YAML.format(ckpt="weights.ckpt"))
    monkeypatch.chdir(tmp_path)
    assert load_run_config("cfg/a.yaml").checkpoint_path == str(tmp_path / "weights.ckpt")
    (tmp_path / "cfg" / "b.yaml").write_text(YAML.format(ckpt=str(tmp_path / "weights.ckpt")))
    assert load_run_config("cfg/b.yaml").checkpoint_path == str(tmp_path / "weights.ckpt")
    # Neither exists: reported beside the YAML, where the error message then points.
    (tmp_path / "cfg" / "c.yaml").write_text(YAML.format(ckpt="missing.ckpt"))
    assert load_run_config("cfg/c.yaml").checkpoint_path == str(tmp_path / "cfg" / "missing.ckpt")
