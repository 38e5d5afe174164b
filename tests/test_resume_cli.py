"""`train.py --resume` checked before anything starts (issue 15 items 3 and 5): every problem of the saved run
listed, exit code 2; allowed hyper-parameter changes pass (and are logged), the others are refused by name."""

import json
import os
import subprocess
import sys

from conftest import ROOT
from test_ppo_trainer import make_trainer
from test_run_reliability import _flip_tensor_bytes
from test_train_entry import OVERRIDES, inputs  # noqa: F401  (inputs: the module fixture)

from mindrlhf.cli.common import default_config_path
from mindrlhf.configs.ppo_config import PPOConfig
from mindrlhf.utils.checkpoint import read_checkpoint
from mindrlhf.utils.integrity import write_checksum


def _validate_only(inputs, save_dir, *extra):  # noqa: F811
    cmd = [
        sys.executable, os.path.join(ROOT, "train.py"), "--sft_model_path", str(inputs / "sft.yaml"),
        "--reward_model_path", str(inputs / "rm.yaml"), "--dataset_dir", str(inputs / "ppo.mindrecord"),
        "--save_dir", str(save_dir), "--device_target", "CPU", *OVERRIDES, "--resume", str(save_dir), *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, cwd=str(inputs), timeout=600)


def test_a_damaged_resume_is_reported_in_full_before_anything_starts(inputs, tmp_path):  # noqa: F811
    save_dir = tmp_path / "run"
    step = make_trainer(save_dir).save()  # a real PPO checkpoint of the fixture's model shapes (step 0)
    # As if train.py had written it: the saved config is the one these command-line flags give.
    state_path = os.path.join(step, "state.json")
    state = json.load(open(state_path))
    state["config"] = PPOConfig.from_yaml(default_config_path("ppo"), OVERRIDES).to_dict()
    json.dump(state, open(state_path, "w"))
    write_checksum(state_path)
    actor = os.path.join(step, "actor.ckpt")
    _flip_tensor_bytes(actor, "model.layers.0.attention.wq.weight", read_checkpoint(actor))
    os.remove(os.path.join(step, "critic_optimizer.ckpt"))
    (save_dir / "metrics.jsonl").write_text('{"step": 0, "x": 1}\n{"step": 1, "x"')

    proc = _validate_only(
        inputs, save_dir, "--cliprange", "0.3", "--actor_lr", "5e-4", "--num_iterations", "6"
    )
    err = proc.stderr
    assert proc.returncode == 2, err[-3000:]
    assert "problem(s) with the inputs, nothing was started" in err
    assert f"{actor}: checksum mismatch" in err
    assert f"{os.path.join(step, 'critic_optimizer.ckpt')}: missing (the step folder is incomplete)" in err
    assert "field 'cliprange' is 0.3 but the run in" in err and "saved with cliprange=0.2" in err
    assert "field 'actor_lr'" not in err and "field 'num_iterations'" not in err  # these may change
    assert "Traceback" not in err and "PPO Batch" not in err
    assert (save_dir / "metrics.jsonl").read_text() == '{"step": 0, "x": 1}\n'  # torn last line dropped
    assert not (save_dir / "checkpoints" / "step_000001").exists()
