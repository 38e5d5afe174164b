"""SFT and reward-model trainers: loss masking and pairwise loss against hand-computed values, then the real entry
points (`python -m mindrlhf.train_sft` / `train_rm`) on a tiny Llama: learning, artefacts, exact resume, bad input.
"""

import math
import os

import mindspore as ms
import numpy as np
import pytest
from conftest import run_module
from mindspore import Tensor, nn

from mindrlhf.configs.run_config import load_run_config, write_run_yaml
from mindrlhf.configs.train_config import RMConfig, SFTConfig
from mindrlhf.data.convert import layout_rows
from mindrlhf.data.schemas import get_schema
from mindrlhf.data.writer import AtomicMindRecordWriter
from mindrlhf.models.llama.config import LlamaConfig
from mindrlhf.models.llama.model import LlamaForCausalLM
from mindrlhf.models.roles import ValueModel, build_from_run_config
from mindrlhf.trainer.losses import ptx_loss
from mindrlhf.trainer.rm_trainer import (
    ArrayBatches,
    PairwiseLoss,
    build_reward_model,
    pairwise_loss,
    reward_init_params,
    split_rows,
)
from mindrlhf.trainer.sft_trainer import SFTLoss, SFTTrainer
from mindrlhf.utils.checkpoint import CheckpointError, read_checkpoint
from mindrlhf.utils.metrics import read_metrics

V, T, P = 64, 16, 8  # vocabulary, seq_length, max_prompt_length of the tiny datasets
TINY = LlamaConfig(
    seq_length=T, hidden_size=32, num_layers=1, num_heads=4, n_kv_heads=2, vocab_size=V, multiple_of=16
)


def log_softmax_np(x):
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def sft_loss_np(logits, ids, mask):
    """-mean over mask[:, 1:] of log softmax(logits[:, :-1])[ids[:, 1:]] in float64."""
    logp = np.take_along_axis(log_softmax_np(logits[:, :-1]), ids[:, 1:, None].astype(np.int64), -1)[..., 0]
    m = mask[:, 1:].astype(np.float64)
    return -(logp * m).sum() / m.sum()


# ------------------------------------------------------------------------------------------------ SFT loss
def test_sft_loss_hand_computed():
    # V = 2. Position 0 predicts uniformly; position 1 gives p(0) = 3/4 (logits [ln 3, 0]).
    logits = Tensor(np.array([[[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]]], np.float32))
    ids = Tensor(np.array([[1, 1, 0]], np.int32))
    both = float(ptx_loss(logits, ids, Tensor(np.array([[0, 1, 1]], np.int32))).asnumpy())
    last = float(ptx_loss(logits, ids, Tensor(np.array([[0, 0, 1]], np.int32))).asnumpy())
    # targets: ids[1] = 1 from position 0 (-log 1/2), ids[2] = 0 from position 1 (-log 3/4)
    # float32 log-softmax (one LogSoftmax kernel since issue 18): a few ulps, not 1e-6, of the exact value
    assert both == pytest.approx((math.log(2.0) + math.log(4.0 / 3.0)) / 2, rel=1e-5)
    assert last == pytest.approx(math.log(4.0 / 3.0), rel=1e-5)


def test_sft_loss_ignores_prompt_targets_and_counts_response(rng):
    logits = rng.randn(2, 10, 7).astype(np.float32)
    ids = rng.randint(0, 7, (2, 10)).astype(np.int32)
    loss_mask = np.zeros((2, 10), np.int32)
    loss_mask[0, 4:9] = 1  # response of row 0: positions 4..8 (9 is padding)
    loss_mask[1, 6:10] = 1

    def loss(i):
        return float(ptx_loss(Tensor(logits), Tensor(i), Tensor(loss_mask)).asnumpy())

    base = loss(ids)
    assert base == pytest.approx(sft_loss_np(logits, ids, loss_mask), rel=1e-5)
    prompt_changed = ids.copy()
    prompt_changed[0, 1:4] = (ids[0, 1:4] + 1) % 7  # prompt-side targets of row 0
    prompt_changed[1, 1:6] = (ids[1, 1:6] + 3) % 7
    prompt_changed[0, 9] = (ids[0, 9] + 1) % 7  # padding
    assert loss(prompt_changed) == base
    response_changed = ids.copy()
    response_changed[1, 7] = (ids[1, 7] + 1) % 7
    assert abs(loss(response_changed) - base) > 1e-4


def test_sft_loss_cell_matches_numpy_through_the_model(rng):
    ms.set_seed(0)
    model = LlamaForCausalLM(TINY)
    ids = rng.randint(3, V, (2, T)).astype(np.int32)
    attention_mask = np.ones((2, T), np.int32)
    attention_mask[1, 12:] = 0
    loss_mask = np.zeros((2, T), np.int32)
    loss_mask[0, 5:] = 1
    loss_mask[1, 7:12] = 1
    loss, metrics = SFTLoss(model)(Tensor(ids), Tensor(attention_mask), Tensor(loss_mask))
    logits = model(Tensor(ids), Tensor(attention_mask)).asnumpy()
    assert float(loss.asnumpy()) == pytest.approx(sft_loss_np(logits, ids, loss_mask), rel=1e-5)
    assert metrics.asnumpy().tolist() == [float(loss_mask[:, 1:].sum())]


@pytest.mark.parametrize("mode, key", [("sft", "loss_mask"), ("lm", "attention_mask")])
def test_sft_mode_picks_the_loss_mask(mode, key, tmp_path):
    data = ArrayBatches(
        {k: np.zeros((4, T), np.int32) for k in ("input_ids", "attention_mask", "loss_mask")}, 2
    )
    trainer = SFTTrainer(SFTConfig(mode=mode, batch_size=2), LlamaForCausalLM(TINY), data, str(tmp_path))
    assert trainer.input_keys == ("input_ids", "attention_mask", key)


# ------------------------------------------------------------------------------------------------ RM loss
@pytest.mark.parametrize(
    "chosen, rejected, expected",
    [
        ([1.0], [0.0], math.log1p(math.exp(-1.0))),
        ([0.0], [0.0], math.log(2.0)),
        ([-2.0], [1.0], math.log1p(math.exp(3.0))),
        ([1.0, 0.0], [0.0, 1.0], (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(1.0))) / 2),
        ([60.0], [-60.0], math.log1p(math.exp(-120.0))),  # naive log(sigmoid) would be log(1) = 0 too
        ([-60.0], [60.0], 120.0),  # naive log(sigmoid(-120)) underflows to -inf in float32
    ],
)
def test_pairwise_loss_hand_computed(chosen, rejected, expected):
    got = float(
        pairwise_loss(Tensor(np.array(chosen, np.float32)), Tensor(np.array(rejected, np.float32))).asnumpy()
    )
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-12)  # float32; CPU exp is good to ~4e-6


class _FirstTokenScore(nn.Cell):
    """Stub reward model: score = first token id; records the batch size of every forward."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def score(self, input_ids, attention_mask):
        self.calls.append(tuple(input_ids.shape))
        return input_ids[:, 0].astype(ms.float32) + 0.0 * attention_mask[:, 0].astype(ms.float32)


def test_pairwise_loss_cell_one_forward_and_metrics():
    stub = _FirstTokenScore()
    chosen = Tensor(np.array([[4, 9], [0, 9]], np.int32))
    rejected = Tensor(np.array([[1, 9], [1, 9]], np.int32))
    mask = Tensor(np.ones((2, 2), np.int32))
    loss, metrics = PairwiseLoss(stub)(chosen, mask, rejected, mask)
    assert stub.calls == [(4, 2)]  # chosen and rejected in one batch of 2B
    # margins r_c - r_r = [3, -1]
    assert float(loss.asnumpy()) == pytest.approx(
        (math.log1p(math.exp(-3)) + math.log1p(math.exp(1))) / 2, rel=1e-5
    )
    accuracy, margin, r_chosen, r_rejected = metrics.asnumpy().tolist()
    assert (accuracy, margin, r_chosen, r_rejected) == (0.5, 1.0, 2.0, 1.0)


def test_reward_init_from_causal_lm_drops_lm_head_and_zeroes_v_head():
    ms.set_seed(1)
    lm = LlamaForCausalLM(TINY)
    params = {n: Tensor(p.asnumpy()) for n, p in lm.parameters_and_names()}
    to_load, strict = reward_init_params(params, TINY, "sft.ckpt")
    assert not strict and "lm_head.weight" not in to_load and len(to_load) == len(params) - 1
    model = build_reward_model(TINY, params, "sft.ckpt")
    assert not model.v_head.weight.asnumpy().any()
    got = dict(model.parameters_and_names())
    for name, value in to_load.items():
        np.testing.assert_array_equal(got[name].asnumpy(), value.asnumpy())
    # a reward checkpoint loads strictly, v_head included
    params["v_head.weight"] = Tensor(np.full((1, TINY.hidden_size), 0.5, np.float32))
    del params["lm_head.weight"]
    assert build_reward_model(TINY, params, "rm.ckpt").v_head.weight.asnumpy().min() == 0.5
    # a backbone tensor missing from a causal-LM checkpoint is an error naming it, not a silent random init
    del params["v_head.weight"]
    params["lm_head.weight"] = Tensor(np.zeros((V, TINY.hidden_size), np.float32))
    del params["model.norm_out.weight"]
    with pytest.raises(CheckpointError, match="model.norm_out.weight"):
        reward_init_params(params, TINY, "broken.ckpt")


def test_split_and_in_memory_batches_are_seeded_and_disjoint():
    rows = {"chosen_ids": np.arange(50, dtype=np.int32).reshape(50, 1)}
    train, held = split_rows(rows, 0.2, seed=3)
    assert len(held["chosen_ids"]) == 10 and len(train["chosen_ids"]) == 40
    assert not set(held["chosen_ids"].ravel()) & set(train["chosen_ids"].ravel())
    again = split_rows(rows, 0.2, seed=3)[1]["chosen_ids"]
    np.testing.assert_array_equal(again, held["chosen_ids"])
    batches = ArrayBatches(train, batch_size=16, seed=5)
    assert len(batches) == 2
    epoch1 = [b["chosen_ids"] for b in batches.iter_epoch(1)]
    np.testing.assert_array_equal(next(batches.iter_epoch(1, start_batch=1))["chosen_ids"], epoch1[1])
    assert not np.array_equal(next(batches.iter_epoch(0))["chosen_ids"], epoch1[0])  # reshuffled per epoch


def test_configs_validate():
    with pytest.raises(Exception, match="mode"):
        SFTConfig(mode="pretrain")
    with pytest.raises(Exception, match="eval_fraction"):
        RMConfig(eval_fraction=1.0)
    with pytest.raises(Exception, match="learning_rat"):
        SFTConfig.from_dict({"learning_rat": 1e-3})


# ------------------------------------------------------------------------------------------------ end to end
def _write(kind, path, prompts, responses, rejected=None):
    cols, reasons = layout_rows(
        kind, prompts, responses, rejected, bos_id=1, eos_id=2, pad_id=0, max_prompt_length=P, seq_length=T
    )
    assert not any(reasons)
    with AtomicMindRecordWriter(str(path), get_schema(kind), {"max_prompt_length": P, "seq_length": T}) as w:
        w.write([{k: c[i] for k, c in cols.items()} for i in range(len(prompts))])
        w.commit()
    return str(path)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Datasets (learnable: the response reverses the prompt mapped to token 4 + 3t mod 30; chosen answers use
    tokens < 34, rejected ones >= 34), a random-init model YAML, and one uninterrupted SFT run of 30 steps."""
    root = tmp_path_factory.mktemp("sft_rm")
    rng = np.random.RandomState(0)
    prompts = [list(rng.randint(4, V, rng.randint(2, 6))) for _ in range(160)]
    responses = [[4 + (3 * t) % 30 for t in p][::-1] for p in prompts]
    rejected = [list(rng.randint(34, V, len(r))) for r in responses]
    data = {
        "sft": _write("sft", root / "sft.mindrecord", prompts, responses),
        "rm": _write("rm", root / "rm.mindrecord", prompts, responses, rejected),
        "model": write_run_yaml(TINY, str(root / "tiny.yaml")),
        "root": root,
    }
    data["sft_args"] = [
        "-m", "mindrlhf.train_sft", "--model_config", data["model"], "--dataset", data["sft"],
        "--max_steps", "30", "--batch_size", "16", "--learning_rate", "3e-3", "--warmup_steps", "3",
        "--log_interval", "5",
    ]  # fmt: skip
    data["sft_out"] = str(root / "sft_full")
    data["sft_proc"] = run_module(*data["sft_args"], "--save_dir", data["sft_out"])
    return data


def _losses(save_dir, key):
    return [r[key] for r in read_metrics(os.path.join(save_dir, "metrics.jsonl")) if key in r]


@pytest.mark.slow
def test_sft_entry_point_learns_and_exports_a_loadable_model(tiny_run):
    out = tiny_run["sft_out"]
    assert "SFT Step: 30/30 | SFT Epoch: 2 | loss: [" in tiny_run["sft_proc"].stderr
    losses = _losses(out, "sft/loss")
    assert len(losses) == 6 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.3, losses
    for name in ("model.ckpt", "model.yaml", "train.log", "checkpoints/latest"):
        assert os.path.exists(os.path.join(out, name)), name
    run = load_run_config(os.path.join(out, "model.yaml"))
    assert run.checkpoint_path == os.path.join(out, "model.ckpt")
    model = build_from_run_config(run, "causal_lm")  # strict
    saved = read_checkpoint(os.path.join(out, "model.ckpt"))
    assert sorted(saved) == sorted(n for n, _ in model.parameters_and_names())
    np.testing.assert_array_equal(model.lm_head.weight.asnumpy(), saved["lm_head.weight"].asnumpy())


@pytest.mark.slow
def test_sft_resume_is_bit_identical(tiny_run):
    out = str(tiny_run["root"] / "sft_resumed")
    first = run_module(*tiny_run["sft_args"], "--save_dir", out, "--stop_at_step", "15")
    assert "stopped after step 15 of 30" in first.stderr and not os.path.exists(
        os.path.join(out, "model.ckpt")
    )
    run_module(*tiny_run["sft_args"], "--save_dir", out, "--resume", out)
    full = read_checkpoint(os.path.join(tiny_run["sft_out"], "model.ckpt"))
    resumed = read_checkpoint(os.path.join(out, "model.ckpt"))
    assert sorted(full) == sorted(resumed)
    for name in full:
        np.testing.assert_array_equal(full[name].asnumpy(), resumed[name].asnumpy(), err_msg=name)
    assert _losses(out, "sft/loss") == _losses(tiny_run["sft_out"], "sft/loss")


@pytest.mark.slow
def test_rm_entry_point_from_sft_reports_accuracy_and_exports_a_value_model(tiny_run):
    out = str(tiny_run["root"] / "rm")
    proc = run_module(
        "-m", "mindrlhf.train_rm", "--model_config", os.path.join(tiny_run["sft_out"], "model.yaml"),
        "--dataset", tiny_run["rm"], "--save_dir", out, "--max_steps", "24", "--batch_size", "8",
        "--eval_fraction", "0.2", "--learning_rate", "3e-3", "--warmup_steps", "2", "--log_interval", "6",
    )  # fmt: skip
    assert "dropped lm_head.weight; v_head.weight zero-initialised" in proc.stderr
    assert "held out 32 of 160 pairs" in proc.stderr
    assert "RM Eval: step 24 | eval/accuracy: " in proc.stderr
    evals = [r for r in read_metrics(os.path.join(out, "metrics.jsonl")) if "eval/accuracy" in r]
    assert len(evals) == 1 and evals[0]["eval/pairs"] == 32
    assert evals[0]["eval/accuracy"] >= 0.8, evals  # chosen and rejected answers use disjoint tokens
    run = load_run_config(os.path.join(out, "model.yaml"))
    model = build_from_run_config(run, "value")  # strict: model.* + v_head.weight, as the critic loads it
    assert isinstance(model, ValueModel) and model.v_head.weight.asnumpy().any()
    assert "lm_head.weight" not in read_checkpoint(run.checkpoint_path)


def _fails_cleanly(*args):
    proc = run_module(*args, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return [line for line in proc.stderr.splitlines() if line.startswith("  - ")]


@pytest.mark.slow
def test_missing_dataset_is_one_clear_error(tiny_run, tmp_path):
    missing = str(tmp_path / "nope.mindrecord")
    problems = _fails_cleanly(
        "-m", "mindrlhf.train_sft", "--model_config", tiny_run["model"], "--dataset", missing,
        "--save_dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert len(problems) == 1 and missing in problems[0] and "not found" in problems[0]


@pytest.mark.slow
def test_dataset_of_the_wrong_kind_is_one_clear_error(tiny_run, tmp_path):
    problems = _fails_cleanly(
        "-m", "mindrlhf.train_rm", "--model_config", tiny_run["model"], "--dataset", tiny_run["sft"],
        "--save_dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert len(problems) == 1 and "is a 'sft' dataset, not 'rm'" in problems[0], problems


@pytest.mark.slow
def test_model_yaml_typo_and_config_typo_are_reported_together(tiny_run, tmp_path):
    text = open(tiny_run["model"], encoding="utf-8").read().replace("hidden_size:", "hidden_sise:")
    bad = tmp_path / "typo.yaml"
    bad.write_text(text, encoding="utf-8")
    problems = _fails_cleanly(
        "-m", "mindrlhf.train_sft", "--model_config", str(bad), "--dataset", tiny_run["sft"],
        "--save_dir", str(tmp_path / "out"), "--learning_rat", "1e-3",
    )  # fmt: skip
    assert len(problems) == 2, problems
    assert "field 'learning_rat': unknown field" in problems[0]
    assert str(bad) in problems[1] and "model.model_config.hidden_size" in problems[1]


def test_config_overrides_are_not_taken_for_abbreviated_flags():
    from mindrlhf.cli.sft import build_parser

    args, overrides = build_parser().parse_known_args(
        ["--model_config", "m.yaml", "--dataset", "d", "--save_dir", "s", "--mode", "lm"]
    )
    assert args.model_config == "m.yaml" and overrides == ["--mode", "lm"]


def test_sft_trains_with_a_scalar_scale_sense(tmp_path, caplog):
    """`runner_wrapper.scale_sense: 1.0` (MindFormers' bf16/LoRA YAMLs) is a fixed loss scale: SFT trains (it used
    to crash with "'float' object is not iterable") and says so in the log."""
    import logging

    rng = np.random.RandomState(0)
    ids = rng.randint(3, V, (4, T)).astype(np.int32)
    rows = {
        "input_ids": ids,
        "attention_mask": np.ones((4, T), np.int32),
        "loss_mask": np.ones((4, T), np.int32),
    }
    model = LlamaForCausalLM(TINY)
    before = {n: p.asnumpy().copy() for n, p in model.parameters_and_names()}
    with caplog.at_level(logging.INFO):
        trainer = SFTTrainer(
            SFTConfig(batch_size=2, max_steps=2, learning_rate=1e-3), model, ArrayBatches(rows, 2), str(tmp_path),
            loss_scale=1.0,
        )  # fmt: skip
        last = trainer.train()
    assert "sft: fixed loss scale 1" in caplog.text
    assert np.isfinite(last["sft/loss"]) and last["sft/loss_scale"] == 1.0 and last["sft/overflow_steps"] == 0
    assert last["sft/target_tokens"] == 2 * (T - 1)
    assert not any(np.array_equal(before[n], p.asnumpy()) for n, p in model.parameters_and_names())
