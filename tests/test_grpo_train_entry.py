"""train.py with a critic-free estimator, as a user runs it: a tiny SFT model, a prompt dataset with an `answer`
column and its SentencePiece tokenizer, `--advantage_estimator grpo --num_generations 4 --reward_funcs
mindrlhf.rewards:accuracy`; and the three input errors that must stop the run before anything is compiled."""

import json
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
from conftest import ROOT

from mindrlhf.configs.run_config import write_run_yaml
from mindrlhf.data.convert import convert_jsonl
from mindrlhf.data.tokenizer import LlamaTokenizer, train_sentencepiece
from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM
from mindrlhf.utils.checkpoint import save_checkpoint
from mindrlhf.utils.metrics import read_metrics

P, NEW = 8, 4


def _prompt_dataset(d, name, tok, with_answer):
    src = d / f"{name}.jsonl"
    with open(src, "w", encoding="utf-8") as f:
        for a in range(4):
            for b in range(4):
                line = {"prompt": f"{a}+{b}="}
                if with_answer:
                    line["answer"] = str(a + b)
                f.write(json.dumps(line) + "\n")
    out = str(d / f"{name}.mindrecord")
    convert_jsonl(str(src), out, tok, kind="prompt", max_prompt_length=P, seq_length=P + NEW)
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("grpo_inputs")
    sentences = [f"{a}+{b}={a + b}" for a in range(10) for b in range(10)]
    tok = LlamaTokenizer(train_sentencepiece(d / "tok", 64, sentences=sentences, byte_fallback=False))
    ms.set_seed(0)
    config = LlamaConfig(
        seq_length=32, hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2, vocab_size=tok.vocab_size,
        intermediate_size=48,
    )  # fmt: skip
    save_checkpoint(LlamaForCausalLM(config), str(d / "sft.ckpt"))
    write_run_yaml(config, str(d / "sft.yaml"), checkpoint=str(d / "sft.ckpt"))
    _prompt_dataset(d, "prompts", tok, with_answer=True)
    _prompt_dataset(d, "no_answer", tok, with_answer=False)
    return d


def run_train(inputs, save_dir, *extra, dataset="prompts"):
    cmd = [
        sys.executable, os.path.join(ROOT, "train.py"), "--sft_model_path", str(inputs / "sft.yaml"),
        "--dataset_dir", str(inputs / f"{dataset}.mindrecord"), "--save_dir", str(save_dir), "--device_target", "CPU",
        "--advantage_estimator", "grpo", "--num_generations", "4", "--reward_funcs", "mindrlhf.rewards:accuracy",
        "--rollout_batch_size", "8", "--mini_batch_size", "8", "--num_iterations", "2", "--max_prompt_length", str(P),
        "--max_new_tokens", str(NEW), "--seq_length", "32", "--actor_lr", "1e-3", "--save_interval", "0",
        *extra,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, cwd=str(inputs))


@pytest.mark.slow
def test_grpo_runs_from_the_command_line_without_a_critic(inputs, tmp_path):
    proc = run_train(inputs, tmp_path / "out", "--beta", "0.04", "--mask_truncated_completions", "true")
    assert proc.returncode == 0, proc.stderr[-5000:]
    metrics = read_metrics(str(tmp_path / "out" / "metrics.jsonl"))
    assert [m["step"] for m in metrics] == [0, 1]
    for key in (
        "env/reward_mean", "rewards/accuracy/mean", "rewards/accuracy/std", "grpo/zero_std_fraction",
        "response/length_mean", "response/length_max", "response/clipped_fraction", "ppo/policy/clipfrac_low",
        "ppo/policy/clipfrac_high", "ppo/policy/entropy", "objective/kl", "grpo/kl", "ppo/logprob_diff/mean",
    ):  # fmt: skip
        assert key in metrics[0] and np.isfinite(metrics[0][key]), key
    assert 0.0 <= metrics[0]["rewards/accuracy/mean"] <= 1.0
    assert not any(k.startswith("ppo/val/") or "critic" in k for k in metrics[0])
    step = tmp_path / "out" / "checkpoints" / "step_000002"
    files = sorted(os.listdir(step))
    assert "actor.ckpt" in files and not any("critic" in f for f in files), files
    state = json.loads((step / "state.json").read_text())
    assert state["config"]["advantage_estimator"] == "grpo" and state["config"]["reward_funcs"] == [
        "mindrlhf.rewards:accuracy"
    ]


@pytest.mark.parametrize(
    "extra,dataset,message",
    [
        (
            ["--reward_funcs", "no_such_module_xyz:score"],
            "prompts",
            "cannot import module 'no_such_module_xyz'",
        ),
        ([], "no_answer", "needs the dataset column 'answer'"),
        (["--num_generations", "3"], "prompts", "field 'num_generations': must divide rollout_batch_size"),
    ],
)
def test_input_errors_stop_before_any_compile(inputs, tmp_path, extra, dataset, message):
    proc = run_train(inputs, tmp_path / "out", *extra, dataset=dataset)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert message in proc.stderr and "1 problem(s)" in proc.stderr, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "PPO Batch" not in proc.stderr
    assert not os.path.exists(tmp_path / "out" / "checkpoints")


@pytest.mark.slow
def test_gae_with_reward_functions_and_no_reward_model(inputs, tmp_path):
    """PPO (gae) on a prompt dataset scored by reward functions only: the critic starts from the SFT backbone."""
    proc = run_train(inputs, tmp_path / "out", "--advantage_estimator", "gae", "--num_generations", "2")
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "the critic starts from" in proc.stderr
    metrics = read_metrics(str(tmp_path / "out" / "metrics.jsonl"))
    for key in ("rewards/accuracy/mean", "ppo/loss/value", "ppo/val/explained_variance", "objective/kl"):
        assert key in metrics[-1] and np.isfinite(metrics[-1][key]), key
    files = os.listdir(tmp_path / "out" / "checkpoints" / "step_000002")
    assert "actor.ckpt" in files and "critic.ckpt" in files, files
