"""train.py as a user runs it: tiny models on CPU, the seed's log line, checkpoints, exact resume, bad inputs."""

import json
import os
import re
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
import yaml
from conftest import ROOT
from test_ppo_trainer import MODEL, PROMPT, FakePrompts

from mindrlhf.configs.run_config import load_run_config, write_run_yaml
from mindrlhf.data.schemas import get_schema
from mindrlhf.data.writer import AtomicMindRecordWriter
from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM
from mindrlhf.models.roles import ValueModel, build_from_run_config
from mindrlhf.utils.checkpoint import read_checkpoint, save_checkpoint
from mindrlhf.utils.metrics import read_metrics

SEQ = 32
OVERRIDES = [
    "--rollout_batch_size",
    "4",
    "--mini_batch_size",
    "2",
    "--ppo_epochs",
    "1",
    "--num_iterations",
    "4",
    "--max_prompt_length",
    str(PROMPT),
    "--max_new_tokens",
    "6",
    "--seq_length",
    str(SEQ),
    "--actor_lr",
    "1e-3",
    "--critic_lr",
    "1e-3",
    "--warmup_steps",
    "1",
    "--save_interval",
    "2",
    "--ptx_coef",
    "0.1",
    "--adaptive_kl",
    "true",
    "--kl_target",
    "0.5",
    "--kl_horizon",
    "100",
]


def write_ppo_dataset(path, rows=16):
    batches = [FakePrompts(4).batch(i) for i in range(rows // 4)]
    data = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    schema = get_schema("ppo")
    with AtomicMindRecordWriter(path, schema, {"max_prompt_length": PROMPT, "seq_length": SEQ}) as writer:
        writer.write([{k: data[k][i].astype(np.int32) for k in schema.names} for i in range(rows)])
        writer.commit()
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("train_inputs")
    ms.set_seed(0)
    config = LlamaConfig(**MODEL)
    save_checkpoint(LlamaForCausalLM(config), str(d / "sft.ckpt"))
    write_run_yaml(config, str(d / "sft.yaml"), checkpoint=str(d / "sft.ckpt"))
    reward = ValueModel(config)
    reward.v_head.weight.set_data(
        ms.Tensor(np.random.RandomState(1).normal(0, 0.5, (1, 32)).astype(np.float32))
    )
    save_checkpoint(reward, str(d / "rm.ckpt"))
    write_run_yaml(config, str(d / "rm.yaml"), checkpoint=str(d / "rm.ckpt"))
    write_ppo_dataset(str(d / "ppo.mindrecord"))
    return d


def run_train(inputs, save_dir, *extra, check=True):
    cmd = [
        sys.executable,
        os.path.join(ROOT, "train.py"),
        "--sft_model_path",
        str(inputs / "sft.yaml"),
        "--reward_model_path",
        str(inputs / "rm.yaml"),
        "--dataset_dir",
        str(inputs / "ppo.mindrecord"),
        "--save_dir",
        str(save_dir),
        "--device_target",
        "CPU",
        *OVERRIDES,
        *extra,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(inputs))
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


LINE = re.compile(
    r"PPO Batch: (\d+) \| PPO Epoch: (\d+) \| loss: \[(-?[\d.]+(?:e[-+]\d+)?)\] \| lr: \[([\d.e+-]+)\] \| "
    r"is overflow: (True|False) \| loss scale: ([\d.]+)"
)


@pytest.mark.slow
def test_train_runs_prints_the_seed_line_and_resumes_exactly(inputs, tmp_path):
    full = run_train(inputs, tmp_path / "full")
    lines = LINE.findall(full.stderr + full.stdout)
    assert re.search(r"memory plan .*?peak [\d.]+ GiB \([a-z ]+\) of", full.stderr + full.stdout, re.S)
    assert len(lines) == 4 * 2  # 4 iterations x 2 mini-batches x 1 epoch
    assert lines[0][:2] == ("0", "0") and all(np.isfinite(float(x[2])) and x[4] == "False" for x in lines)
    metrics = read_metrics(str(tmp_path / "full" / "metrics.jsonl"))
    assert [m["step"] for m in metrics] == [0, 1, 2, 3]
    for key in (
        "env/score_mean",
        "objective/kl",
        "objective/kl_coef",
        "ppo/loss/policy",
        "ppo/loss/value",
        "ppo/policy/clipfrac",
        "ppo/policy/approx_kl",
        "ppo/policy/entropy",
        "ppo/val/explained_variance",
        "response/length_mean",
        "ppo/logprob_diff/max",
        "perf/tokens_per_s",
        "time/generate",
    ):
        assert key in metrics[0] and np.isfinite(metrics[0][key]), key
    assert metrics[0]["ppo/logprob_diff/max"] < 1e-4
    assert metrics[1]["objective/kl_coef"] != metrics[0]["objective/kl_coef"]  # adaptive KL is called
    # The actor checkpoint loads as an SFT model again (MindFormers names, strict).
    final = tmp_path / "full" / "checkpoints" / "step_000004"
    sft_again = load_run_config(str(inputs / "sft.yaml"))
    model = build_from_run_config(sft_again, "causal_lm", params=read_checkpoint(str(final / "actor.ckpt")))
    assert model is not None

    # Interrupted after 2 iterations, then resumed. The state at the stop is bit-identical to the uninterrupted
    # run's; after the resume the runs agree to float32 rounding, not bit for bit: MindSpore's CPU kernels retune
    # their parallel split over a graph's first launches (the same generation graph returns log-probs differing
    # by ~1e-6 between its 1st, 2nd and 6th launch in one process), so a fresh process sums in another order.
    run_train(inputs, tmp_path / "split", "--stop_after", "2")
    assert open(tmp_path / "split" / "checkpoints" / "latest").read().strip() == "step_000002"
    half = tmp_path / "full" / "checkpoints" / "step_000002"
    for name in ("actor", "critic", "actor_optimizer", "critic_optimizer"):
        a = read_checkpoint(str(half / f"{name}.ckpt"))
        b = read_checkpoint(str(tmp_path / "split" / "checkpoints" / "step_000002" / f"{name}.ckpt"))
        assert sorted(a) == sorted(b) and all(np.array_equal(a[k].asnumpy(), b[k].asnumpy()) for k in a), name
    run_train(inputs, tmp_path / "split", "--resume", str(tmp_path / "split"))
    resumed = tmp_path / "split" / "checkpoints" / "step_000004"
    for name in ("actor", "critic"):
        a = read_checkpoint(str(final / f"{name}.ckpt"))
        b = read_checkpoint(str(resumed / f"{name}.ckpt"))
        assert sorted(a) == sorted(b)
        for k in a:
            np.testing.assert_allclose(
                b[k].asnumpy(), a[k].asnumpy(), rtol=1e-4, atol=1e-6, err_msg=f"{name} {k}"
            )
    # A resume that lost state (here: restarting from the SFT weights) would be far off: the check can fail.
    start = read_checkpoint(str(inputs / "sft.ckpt"))
    moved = max(
        float(np.abs(start[k].asnumpy() - read_checkpoint(str(final / "actor.ckpt"))[k].asnumpy()).max())
        for k in start
    )
    assert moved > 1e-3
    split = read_metrics(str(tmp_path / "split" / "metrics.jsonl"))
    assert [m["step"] for m in split] == [0, 1, 2, 3]
    for x, y in zip(split, metrics):
        for key in ("env/score_mean", "objective/kl_coef", "ppo/loss/value", "response/length_mean"):
            assert y[key] == pytest.approx(x[key], rel=1e-3, abs=1e-5), (x["step"], key)
    a_state = json.load(open(final / "state.json"))
    b_state = json.load(open(resumed / "state.json"))
    assert b_state["step"] == 4 and b_state["actor_step"] == a_state["actor_step"]
    assert b_state["kl_controller"]["value"] == pytest.approx(a_state["kl_controller"]["value"], rel=1e-6)


def test_bad_inputs_are_reported_together_before_anything_starts(inputs, tmp_path):
    # An RM YAML whose checkpoint does not match its config, a missing dataset, a typo'd override, an SFT YAML
    # with a negative fixed loss scale.
    cfg = LlamaConfig(**{**MODEL, "hidden_size": 64})
    bad_rm = write_run_yaml(cfg, str(tmp_path / "bad_rm.yaml"), checkpoint=str(inputs / "rm.ckpt"))
    sft = yaml.safe_load(open(inputs / "sft.yaml"))
    sft.setdefault("runner_wrapper", {})["scale_sense"] = -1.0
    sft["load_checkpoint"] = str(inputs / "sft.ckpt")  # the copy lives elsewhere: an absolute path
    bad_sft = tmp_path / "bad_sft.yaml"
    bad_sft.write_text(yaml.safe_dump(sft))
    cmd = [
        sys.executable,
        os.path.join(ROOT, "train.py"),
        "--sft_model_path",
        str(bad_sft),
        "--reward_model_path",
        bad_rm,
        "--dataset_dir",
        str(tmp_path / "missing.mindrecord"),
        "--save_dir",
        str(tmp_path / "out"),
        "--device_target",
        "CPU",
        "--clip_range",
        "0.2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr
    assert "4 problem(s)" in err and "Traceback" not in err and "PPO Batch" not in err
    assert "bad_sft.yaml" in err and "runner_wrapper.scale_sense" in err and "finite number > 0" in err
    assert "clip_range" in err
    assert "missing.mindrecord" in err and "not found" in err
    assert "rm.ckpt" in err and "with a different shape" in err
    assert not os.path.exists(tmp_path / "out" / "checkpoints")


def test_dataset_of_the_wrong_kind_is_refused(inputs, tmp_path):
    schema = get_schema("sft")
    path = str(tmp_path / "sft.mindrecord")
    with AtomicMindRecordWriter(path, schema, {"seq_length": SEQ}) as writer:
        writer.write([{k: np.ones(SEQ, np.int32) for k in schema.names} for _ in range(4)])
        writer.commit()
    cmd = [
        sys.executable,
        os.path.join(ROOT, "train.py"),
        "--sft_model_path",
        str(inputs / "sft.yaml"),
        "--reward_model_path",
        str(inputs / "rm.yaml"),
        "--dataset_dir",
        path,
        "--save_dir",
        str(tmp_path / "o"),
        "--device_target",
        "CPU",
        *OVERRIDES,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert (
        proc.returncode == 2 and "1 problem(s)" in proc.stderr and "'sft' dataset, not 'ppo'" in proc.stderr
    )
