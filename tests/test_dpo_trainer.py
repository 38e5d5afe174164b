"""DPO trainer: response positions, the pair loss through a model against numpy (`mindrlhf.algorithms.dpo_loss`)
under jit for every loss type, one step that learns, then the real entry point (`python -m mindrlhf.train_dpo`)
on a tiny Llama and a tiny rm dataset: TRL's metric names, an SFT-loadable export, exact resume, bad input.
"""

import math
import os

import mindspore as ms
import numpy as np
import pytest
from conftest import run_module
from mindspore import Tensor

from mindrlhf.algorithms import dpo_loss
from mindrlhf.configs.dpo_config import DPOConfig
from mindrlhf.configs.run_config import write_run_yaml
from mindrlhf.data.convert import layout_rows
from mindrlhf.data.schemas import get_schema
from mindrlhf.data.writer import AtomicMindRecordWriter
from mindrlhf.models.llama.config import LlamaConfig
from mindrlhf.models.llama.model import LlamaForCausalLM, llama_param_shapes
from mindrlhf.models.roles import build_role
from mindrlhf.trainer.dpo_trainer import DPO_METRICS, DPOPairLoss, FrozenPairLogps, response_masks
from mindrlhf.trainer.train_step import build_train_step
from mindrlhf.utils.checkpoint import read_checkpoint, save_checkpoint
from mindrlhf.utils.metrics import read_metrics

V, T, P = 64, 16, 8  # vocabulary, seq_length, max_prompt_length of the tiny datasets
TINY = LlamaConfig(
    seq_length=T, hidden_size=32, num_layers=1, num_heads=4, n_kv_heads=2, vocab_size=V, multiple_of=16
)


# ------------------------------------------------------------------------------------------- numpy reference
def response_masks_np(c_ids, c_mask, r_ids, r_mask):
    out_c, out_r = np.zeros(c_ids.shape), np.zeros(r_ids.shape)
    for i in range(len(c_ids)):
        same = (c_ids[i] == r_ids[i]) & (c_mask[i] > 0) & (r_mask[i] > 0)
        start = int(np.argmin(same)) if not same.all() else len(same)
        out_c[i, start:] = c_mask[i, start:]
        out_r[i, start:] = r_mask[i, start:]
    return out_c, out_r


def seq_logps_np(logits, ids, resp, average):
    z = logits[:, :-1].astype(np.float64)
    logp = z - z.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, ids[:, 1:, None], -1)[..., 0] * resp[:, 1:]
    total = picked.sum(1)
    return total / np.maximum(resp[:, 1:].sum(1), 1) if average else total


def test_response_masks_start_where_chosen_and_rejected_first_differ():
    #          BOS prompt  response        EOS pad
    c_ids = np.array([[1, 5, 6, 7, 8, 2, 0, 0], [1, 5, 9, 2, 0, 0, 0, 0]], np.int32)
    r_ids = np.array([[1, 5, 6, 7, 3, 4, 2, 0], [1, 5, 9, 9, 2, 0, 0, 0]], np.int32)
    c_mask, r_mask = (c_ids > 0).astype(np.int32), (r_ids > 0).astype(np.int32)
    c, r = (x.asnumpy() for x in response_masks(*(Tensor(x) for x in (c_ids, c_mask, r_ids, r_mask))))
    # row 0: first difference at position 4 (8 vs 3); row 1: at position 3 (EOS vs 9)
    np.testing.assert_array_equal(c, [[0, 0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(r, [[0, 0, 0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(c, response_masks_np(c_ids, c_mask, r_ids, r_mask)[0])


def _random_pairs(rng, b):
    """B pairs sharing a random prompt, answers of different lengths, right-padded to T."""
    c_ids, r_ids = np.zeros((b, T), np.int32), np.zeros((b, T), np.int32)
    for i in range(b):
        prompt = [1, *rng.randint(3, V, rng.randint(2, 6))]
        for ids in (c_ids, r_ids):
            row = prompt + list(rng.randint(3, V, rng.randint(1, T - len(prompt) - 1))) + [2]
            ids[i, : len(row)] = row
    return c_ids, (c_ids > 0).astype(np.int32), r_ids, (r_ids > 0).astype(np.int32)


@pytest.mark.parametrize(
    "loss_type, label_smoothing", [("sigmoid", 0.0), ("sigmoid", 0.2), ("ipo", 0.0), ("hinge", 0.0)]
)
def test_pair_loss_through_the_model_matches_numpy_under_jit(loss_type, label_smoothing):
    rng = np.random.RandomState(1)
    ms.set_seed(0)
    model = LlamaForCausalLM(TINY)
    config = DPOConfig(beta=0.7, loss_type=loss_type, label_smoothing=label_smoothing)
    cell = DPOPairLoss(model, config)
    pairs = _random_pairs(rng, 4)
    ref_c, ref_r = rng.randn(4).astype(np.float32) * 3 - 30, rng.randn(4).astype(np.float32) * 3 - 30

    @ms.jit
    def step(*args):
        return cell(*args)

    loss, metrics = step(*(Tensor(x) for x in pairs), Tensor(ref_c), Tensor(ref_r))

    c_ids, c_mask, r_ids, r_mask = pairs
    resp_c, resp_r = response_masks_np(*pairs)
    logits = model(Tensor(np.concatenate([c_ids, r_ids])), Tensor(np.concatenate([c_mask, r_mask]))).asnumpy()
    average = loss_type == "ipo"
    pc = seq_logps_np(logits[:4], c_ids, resp_c, average)
    pr = seq_logps_np(logits[4:], r_ids, resp_r, average)
    losses, cr, rr = dpo_loss(pc, pr, ref_c, ref_r, 0.7, loss_type, label_smoothing)
    expected = [cr.mean(), rr.mean(), (cr > rr).mean(), (cr - rr).mean(), pc.mean(), pr.mean()]
    np.testing.assert_allclose(float(loss.asnumpy()), losses.mean(), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(metrics.asnumpy(), expected, rtol=2e-5, atol=2e-5)
    assert len(expected) == len(DPO_METRICS)


def test_one_dpo_step_lowers_the_loss_and_opens_the_margin():
    """At the start policy == reference: every margin is 0, the sigmoid loss is exactly log 2. One AdamW step
    on a batch must lower it and make the chosen reward exceed the rejected one."""
    rng = np.random.RandomState(2)
    ms.set_seed(0)
    policy, ref_model = LlamaForCausalLM(TINY), LlamaForCausalLM(TINY)
    for (_, p), (_, q) in zip(policy.parameters_and_names(), ref_model.parameters_and_names()):
        q.set_data(p.data.copy())
    reference = FrozenPairLogps(ref_model)
    config = DPOConfig(beta=0.5, learning_rate=1e-2, warmup_steps=0, lr_decay="constant")
    cell = DPOPairLoss(policy, config)
    step, _, _ = build_train_step(cell, policy.trainable_params(), config.learning_rate, 10, config)
    pairs = tuple(Tensor(x) for x in _random_pairs(rng, 4))
    ref = reference(*pairs)
    loss0, metrics0, _, _ = step(*pairs, *ref)
    np.testing.assert_allclose(float(loss0.asnumpy()), math.log(2), rtol=1e-6)
    np.testing.assert_allclose(metrics0.asnumpy()[:4], 0.0, atol=1e-6)
    loss1, metrics1, _, _ = step(*pairs, *ref)
    names = dict(zip(DPO_METRICS, metrics1.asnumpy()))
    assert float(loss1.asnumpy()) < math.log(2) - 0.01, float(loss1.asnumpy())
    assert names["rewards/margins"] > 0.01 and names["rewards/accuracies"] > 0.5, names


def test_config_validates_each_field():
    for bad, field in (
        ({"loss_type": "kto"}, "loss_type"),
        ({"beta": 0.0}, "beta"),
        ({"label_smoothing": 0.6}, "label_smoothing"),
        ({"loss_type": "ipo", "label_smoothing": 0.1}, "label_smoothing"),
        ({"eval_fraction": 1.0}, "eval_fraction"),
    ):
        with pytest.raises(Exception, match=f"field '{field}'"):
            DPOConfig.from_dict(bad)


# ------------------------------------------------------------------------------------------------ end to end
def _write_rm(path, prompts, chosen, rejected):
    cols, reasons = layout_rows(
        "rm", prompts, chosen, rejected, bos_id=1, eos_id=2, pad_id=0, max_prompt_length=P, seq_length=T
    )
    assert not any(reasons)
    with AtomicMindRecordWriter(str(path), get_schema("rm"), {"max_prompt_length": P, "seq_length": T}) as w:
        w.write([{k: c[i] for k, c in cols.items()} for i in range(len(prompts))])
        w.commit()
    return str(path)


@pytest.fixture(scope="session")
def dpo_run(tmp_path_factory):
    """A tiny rm dataset (chosen answers use tokens < 34, rejected ones >= 34), a random "SFT" model with a
    checkpoint, and one uninterrupted DPO run of 16 steps with per-batch reference forwards."""
    root = tmp_path_factory.mktemp("dpo")
    rng = np.random.RandomState(0)
    prompts = [list(rng.randint(4, V, rng.randint(2, 6))) for _ in range(80)]
    chosen = [[4 + (3 * t) % 30 for t in p][::-1] for p in prompts]
    rejected = [list(rng.randint(34, V, len(r))) for r in chosen]
    ms.set_seed(3)
    ckpt = save_checkpoint(LlamaForCausalLM(TINY), str(root / "sft" / "model.ckpt"))
    data = {
        "rm": _write_rm(root / "rm.mindrecord", prompts, chosen, rejected),
        "sft": _write_sft(root),
        "model": write_run_yaml(TINY, str(root / "sft" / "model.yaml"), checkpoint=ckpt),
        "root": root,
    }
    data["args"] = [
        "-m", "mindrlhf.train_dpo", "--model_config", data["model"], "--dataset", data["rm"],
        "--max_steps", "16", "--batch_size", "8", "--learning_rate", "3e-3", "--warmup_steps", "2",
        "--log_interval", "4", "--eval_fraction", "0.2", "--beta", "0.2",
    ]  # fmt: skip
    data["out"] = str(root / "full")
    data["proc"] = run_module(*data["args"], "--save_dir", data["out"])
    return data


def _write_sft(root):
    cols, _ = layout_rows("sft", [[5, 6]] * 8, [[7]] * 8, None, bos_id=1, eos_id=2, pad_id=0,
                          max_prompt_length=P, seq_length=T)  # fmt: skip
    with AtomicMindRecordWriter(str(root / "sft.mindrecord"), get_schema("sft"),
                                {"max_prompt_length": P, "seq_length": T}) as w:  # fmt: skip
        w.write([{k: c[i] for k, c in cols.items()} for i in range(8)])
        w.commit()
    return str(root / "sft.mindrecord")


def _rows(save_dir, key):
    return [r for r in read_metrics(os.path.join(save_dir, "metrics.jsonl")) if key in r]


@pytest.mark.slow
def test_dpo_entry_point_learns_logs_trl_names_and_exports_an_sft_model(dpo_run):
    out, proc = dpo_run["out"], dpo_run["proc"]
    assert "held out 16 of 80 pairs" in proc.stderr
    assert "DPO Step: 16/16 | DPO Epoch: 1 | loss: [" in proc.stderr
    rows = _rows(out, "rewards/margins")
    assert len(rows) == 4
    for key in ("loss", "grad_norm", "lr", *DPO_METRICS):
        assert all(math.isfinite(r[key]) for r in rows), key
    assert (
        rows[-1]["loss"] < rows[0]["loss"] - 0.1 and rows[-1]["rewards/margins"] > rows[0]["rewards/margins"]
    )
    evals = _rows(out, "eval/rewards/accuracies")
    assert len(evals) == 1 and evals[0]["eval/pairs"] == 16
    assert evals[0]["eval/rewards/accuracies"] >= 0.8 and evals[0]["eval/loss"] < math.log(2), evals
    # The export is an SFT model: train.py's actor/reference builder loads it strictly, weights changed.
    model = build_role(os.path.join(out, "model.yaml"), "causal_lm")
    saved = read_checkpoint(os.path.join(out, "model.ckpt"))
    assert {n: tuple(v.shape) for n, v in saved.items()} == llama_param_shapes(TINY)
    start = read_checkpoint(dpo_run["model"].replace("model.yaml", "model.ckpt"))
    assert not np.allclose(saved["lm_head.weight"].asnumpy(), start["lm_head.weight"].asnumpy())
    np.testing.assert_array_equal(model.lm_head.weight.asnumpy(), saved["lm_head.weight"].asnumpy())


@pytest.mark.slow
def test_dpo_resume_equals_the_uninterrupted_run(dpo_run):
    out = str(dpo_run["root"] / "resumed")
    first = run_module(*dpo_run["args"], "--save_dir", out, "--stop_at_step", "8")
    assert "stopped after step 8 of 16" in first.stderr and not os.path.exists(
        os.path.join(out, "model.ckpt")
    )
    run_module(*dpo_run["args"], "--save_dir", out, "--resume", out)
    full = read_checkpoint(os.path.join(dpo_run["out"], "model.ckpt"))
    resumed = read_checkpoint(os.path.join(out, "model.ckpt"))
    assert sorted(full) == sorted(resumed)
    for name in full:
        np.testing.assert_allclose(
            full[name].asnumpy(), resumed[name].asnumpy(), rtol=1e-5, atol=1e-6, err_msg=name
        )
    for key in ("loss", "rewards/margins"):
        np.testing.assert_allclose(
            [r[key] for r in _rows(out, key)],
            [r[key] for r in _rows(dpo_run["out"], key)],
            rtol=1e-5,
            atol=1e-6,
        )


@pytest.mark.slow
def test_precomputed_reference_log_probs_give_the_same_run(dpo_run):
    out = str(dpo_run["root"] / "precomputed")
    proc = run_module(*dpo_run["args"], "--save_dir", out, "--precompute_ref_log_probs", "true")
    assert "reference log-probs precomputed" in proc.stderr
    for key in ("loss", "rewards/chosen", "logps/rejected"):
        np.testing.assert_allclose(
            [r[key] for r in _rows(out, key)],
            [r[key] for r in _rows(dpo_run["out"], key)],
            rtol=1e-4,
            atol=1e-5,
        )


@pytest.mark.slow
def test_bad_inputs_exit_2_with_one_report(dpo_run, tmp_path):
    no_ckpt = write_run_yaml(TINY, str(tmp_path / "random.yaml"))
    proc = run_module(
        "-m", "mindrlhf.train_dpo", "--model_config", no_ckpt, "--dataset", dpo_run["sft"],
        "--save_dir", str(tmp_path / "out"), "--loss_type", "kto",
    check=False)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    problems = [line for line in proc.stderr.splitlines() if line.startswith("  - ")]
    assert len(problems) == 2, problems
    assert "field 'loss_type'" in problems[0] and "sigmoid, ipo, hinge" in problems[0]
    assert no_ckpt in problems[1] and "names no checkpoint" in problems[1]
    assert "train_dpo: 2 problem(s) with the inputs, nothing was started" in proc.stderr
