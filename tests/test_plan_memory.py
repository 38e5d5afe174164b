"""The memory plan (mindrlhf/tools/plan_memory.py): hand-computed bytes for a tiny config, the 7B parameter count,
division by the parallel layout, the roles a run builds, and the command's errors and output."""

import json
import runpy
import sys

import pytest
import yaml
from conftest import LLAMA2_7B_YAML

from mindrlhf.configs.ppo_config import PPOConfig
from mindrlhf.models.llama.config import LlamaConfig
from mindrlhf.tools.plan_memory import (
    Layout,
    layer_activation_bytes,
    parameter_counts,
    plan_memory,
    recompute_mode,
)

# H 4, 1 layer, 2 heads of 2, 1 KV head, FFN 6, vocab 10.
TINY = dict(hidden_size=4, num_layers=1, num_heads=2, n_kv_heads=1, intermediate_size=6, vocab_size=10,
            seq_length=8, bos_token_id=1, eos_token_id=2, pad_token_id=0)  # fmt: skip
# 2 prompts of 3 tokens, 2 new tokens: T = 5, KV cache of 4 slots.
PPO = dict(rollout_batch_size=2, mini_batch_size=2, max_prompt_length=3, max_new_tokens=2, seq_length=5,
           warmup_steps=0, num_iterations=1)  # fmt: skip


def _ppo(**kw):
    return PPOConfig(**{**PPO, **kw})


def test_tiny_config_bytes_by_hand():
    model = LlamaConfig(**TINY)
    # layer: 2 norms 2*4 + wq 4*4 + wk, wv 4*2 each + wo 4*4 + w1, w2, w3 3*4*6 = 8+16+16+16+72 = 128
    assert parameter_counts(model) == {"layers": 128, "embedding": 40, "head": 40, "norm": 4}
    assert parameter_counts(model, value_head=True)["head"] == 4
    plan = plan_memory(model, _ppo(), reward=model)
    actor = {r.name: r for r in plan.roles}["actor"]
    assert actor.params == 212
    assert (actor.weights, actor.gradients, actor.optimizer) == (848, 848, 212 * 8)  # fp32: no master copy
    assert actor.kv_cache == 2 * 1 * 2 * 1 * 2 * 4 * 4  # K,V x layers x rows x kv heads x hd x slots x fp32
    assert actor.logits == 2 * 2 * 10 * (4 + 4 + 4)  # [B, N, V]: output, fp32 copy, fp32 gradient
    # per token: 4 B x (4H 16 + q,k,v,o (2*2+2*1)*2 = 12 + 4F 24) + softmax 4 B x 2 heads x T 5 = 248; 10 tokens
    assert layer_activation_bytes(model, 2, 5, Layout(), "none") == 2480
    assert layer_activation_bytes(model, 2, 5, Layout(), "selective") == 2080
    assert actor.activations == {"none": 2480, "selective": 2080, "full": 2 * 5 * 4 * 4 + 2480}
    reference = {r.name: r for r in plan.roles}["reference"]
    assert (reference.weights, reference.gradients, reference.optimizer) == (848, 0, 0)
    assert reference.logits == 2 * 2 * 10 * (4 + 4)
    assert plan.resident == sum(r.weights + r.optimizer for r in plan.roles) + actor.kv_cache
    assert plan.phases["train actor"] == 848 + 2480 + 480
    assert plan.peak == plan.resident + max(plan.phases.values())


def test_sixteen_bit_weights_keep_fp32_moments_and_no_master_copy():
    model = LlamaConfig(**TINY, param_init_type="float16", compute_dtype="float16")
    actor = plan_memory(model, _ppo(), reward=model).roles[0]
    assert (actor.weights, actor.gradients, actor.optimizer) == (212 * 2, 212 * 2, 212 * 8)
    assert actor.kv_cache == 2 * 1 * 2 * 1 * 2 * 4 * 2  # 16-bit cache


def test_7b_parameter_count_matches_the_model_yaml():
    from mindrlhf.configs.run_config import load_run_config
    from mindrlhf.models.llama.model import llama_param_shapes

    model = load_run_config(LLAMA2_7B_YAML).model_config
    expected = sum(int(__import__("numpy").prod(s)) for s in llama_param_shapes(model).values())
    assert expected == 6_738_415_616
    assert sum(parameter_counts(model).values()) == expected
    assert sum(parameter_counts(model, value_head=True).values()) == 6_607_347_712


def test_division_by_model_pipeline_and_optimizer_shard():
    model = LlamaConfig(**{**TINY, "num_layers": 2, "num_heads": 2, "n_kv_heads": 2})
    one = plan_memory(model, _ppo(), reward=model).roles[0]
    layers = parameter_counts(model)["layers"]
    mp = plan_memory(model, _ppo(), reward=model, layout=Layout(mp=2)).roles[0]
    assert one.params - mp.params == layers // 2  # embedding and head replicated (vocab_emb_dp)
    vocab = plan_memory(model, _ppo(), reward=model, layout=Layout(mp=2, vocab_emb_dp=False)).roles[0]
    assert mp.params - vocab.params == 40  # embedding 40 + head 40, each halved
    pp = plan_memory(model, _ppo(), reward=model, layout=Layout(pp=2, micro_batch_num=2)).roles[0]
    assert pp.params == layers // 2 + 40 + 4  # one stage's layers + the larger edge (embedding = head) + norm
    assert pp.kv_cache == one.kv_cache // 2
    # 1F1B: the first stage holds min(pp, m) micro-batches of rows / m for its layers (here 2 of 1 row, 1 layer)
    assert pp.activations["none"] * 2 == one.activations["none"]
    mb = plan_memory(model, _ppo(), reward=model, layout=Layout(micro_batch_num=2)).roles[0]
    assert mb.activations == one.activations  # without a pipeline micro_batch_num changes nothing
    shard = plan_memory(model, _ppo(), reward=model, layout=Layout(dp=2, optimizer_shard=True)).roles[0]
    assert shard.optimizer * 2 == one.optimizer and shard.weights == one.weights
    split = plan_memory(model, _ppo(), reward=model, layout=Layout(dp=2, batch_split=2)).roles[0]
    assert split.activations["none"] * 2 == one.activations["none"] and split.kv_cache * 2 == one.kv_cache
    assert mp.kv_cache * 2 == one.kv_cache


def test_only_the_roles_the_run_builds():
    model = LlamaConfig(**TINY)
    names = lambda plan: [r.name for r in plan.roles]  # noqa: E731
    assert names(plan_memory(model, _ppo(), reward=model)) == ["actor", "critic", "reference", "reward"]
    grpo = _ppo(advantage_estimator="grpo", num_generations=2, beta=0.0, init_kl_coef=0.0)
    plan = plan_memory(model, grpo, reward=None)
    assert names(plan) == ["actor"] and set(plan.phases) == {"generate", "score", "train actor"}
    assert names(plan_memory(model, _ppo(advantage_estimator="grpo", num_generations=2, beta=0.04))) == [
        "actor", "reference"]  # fmt: skip


def test_recompute_mode_from_the_yaml():
    assert recompute_mode({}) == "none"
    assert recompute_mode({"recompute_config": {"recompute": True, "select_recompute": True}}) == "full"
    assert recompute_mode({"recompute_config": {"recompute": False, "select_recompute": [True, False]}}) == (
        "selective"
    )
    assert recompute_mode({"recompute_config": {"recompute": [0, 0]}}) == "none"


# runpy warns that the module was imported before it ran as __main__ (this file imports it); harmless here.
RUNPY_WARNING = "ignore:.*found in sys.modules:RuntimeWarning"


def _cli(capsys, *args):
    """`python -m mindrlhf.tools.plan_memory ARGS` run in this process (MindSpore is already imported here)."""
    argv = sys.argv
    sys.argv = ["plan_memory", *args]
    try:
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_module("mindrlhf.tools.plan_memory", run_name="__main__")
    finally:
        sys.argv = argv
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.mark.filterwarnings(RUNPY_WARNING)
def test_cli_prints_the_7b_plan_and_json(capsys):
    seed = ["--sft_model_path", LLAMA2_7B_YAML, "--reward_model_path", LLAMA2_7B_YAML]
    code, out, err = _cli(capsys, *seed, "--rollout_batch_size", "8", "--mini_batch_size", "1", "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert [r["name"] for r in plan["roles"]] == ["actor", "critic", "reference", "reward"]
    assert plan["layout"]["mp"] == 8 and plan["recompute"] == "full"  # the seed YAML: mp 8, recompute true
    # actor per device: 32 layers / 8 + embedding and lm_head replicated (vocab_emb_dp) + norm
    assert plan["roles"][0]["params"] == 6_476_267_520 // 8 + 2 * 131_072_000 + 4096
    code, out, _ = _cli(capsys, *seed, "--device_memory_gb", "8")
    assert code == 1 and "does NOT fit" in out and "reward (frozen)" in out


@pytest.mark.filterwarnings(RUNPY_WARNING)
def test_bad_yaml_gives_one_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load(open(LLAMA2_7B_YAML))
    data["model"]["model_config"]["num_heads"] = 30  # does not divide hidden_size 4096
    bad.write_text(yaml.safe_dump(data))
    code, _, err = _cli(capsys, "--sft_model_path", str(bad))
    assert (
        code == 2
        and "1 problem(s)" in err
        and f"{bad}" in err
        and "num_heads" in err
        and "Traceback" not in err
    )
    code, _, err = _cli(capsys, "--sft_model_path", str(bad), "--mini_batch_size", "3")
    assert code == 2 and "2 problem(s)" in err and "mini_batch_size" in err  # every problem in one report
    data = yaml.safe_load(open(LLAMA2_7B_YAML))
    data["parallel_config"]["model_parallel"] = 3  # divides neither the heads nor the FFN width
    data["load_checkpoint"] = str(tmp_path / "absent.ckpt")  # planning never reads the weights
    bad.write_text(yaml.safe_dump(data))
    code, _, err = _cli(capsys, "--sft_model_path", str(bad))
    assert code == 2 and "model_parallel" in err and "absent.ckpt" not in err
