"""The arithmetic verifiable-reward demo (examples/arithmetic_demo): task, split and leak check, digit tokenizer,
exact-match scoring, the chunked evaluator, and the quick end-to-end run that must RAISE held-out accuracy."""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "examples", "arithmetic_demo"))

import arith_task as task  # noqa: E402


# ------------------------------------------------------------------------------------------------ task and split
def test_prompt_and_reversed_answer_texts():
    assert task.prompt_text(7, 12) == "07+12="
    assert task.prompt_text(0, 0) == "00+00="
    assert [task.answer_text(a, b) for a, b in ((7, 12), (7, 5), (99, 99), (0, 0), (50, 50))] == [
        "91", "21", "891", "0", "001",
    ]  # fmt: skip
    assert task.parse_reversed("891") == 198


def test_split_is_disjoint_complete_and_closed_under_swap():
    split = task.make_split(seed=0)
    sft, rl, held = set(split.sft), set(split.rl), set(split.held_out)
    assert len(rl) == 2000 and len(held) in (1000, 1001)
    assert len(sft) + len(rl) + len(held) == 10_000
    assert sft | rl | held == {(a, b) for a in range(100) for b in range(100)}
    assert all((b, a) in held for a, b in held)
    assert not ({(b, a) for a, b in held} & (sft | rl))


def test_split_is_a_function_of_the_seed():
    assert task.make_split(3) == task.make_split(3)
    assert task.make_split(3).held_out != task.make_split(4).held_out


def test_leak_check_catches_a_swapped_pair_and_an_overlap():
    split = task.make_split(seed=0)
    a, b = next(p for p in split.held_out if p[0] != p[1])
    # (a, b) stays held out while its mirror (b, a) moves into SFT: sets disjoint, but a leak by commutativity
    held = tuple(p for p in split.held_out if p != (b, a))
    leaked = task.Split(sft=split.sft + ((b, a),), rl=split.rl, held_out=held)
    with pytest.raises(task.LeakError, match="held-out pairs are trained on"):
        task.check_no_leak(leaked)
    both = task.Split(sft=split.sft, rl=split.rl + split.sft[:1], held_out=split.held_out)
    with pytest.raises(task.LeakError, match="both SFT and RL"):
        task.check_no_leak(both)


def test_leak_check_on_the_written_file(tmp_path):
    split = task.make_split(seed=0)
    clean = task.write_jsonl(str(tmp_path / "rl.jsonl"), split.rl, "prompt")
    assert task.check_prompts_in_file(clean, split.held_out) == 2000
    a, b = split.held_out[0]
    dirty = task.write_jsonl(str(tmp_path / "dirty.jsonl"), list(split.rl[:5]) + [(b, a)], "prompt")
    with pytest.raises(task.LeakError, match=r"dirty.jsonl:6: prompt"):
        task.check_prompts_in_file(dirty, split.held_out)
    line = json.loads(open(clean).readline())
    assert set(line) == {"prompt", "answer"}


# ------------------------------------------------------------------------------------------------ tokenizer
@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from mindrlhf.data.tokenizer import LlamaTokenizer

    return LlamaTokenizer(task.train_tokenizer(str(tmp_path_factory.mktemp("tok") / "tokenizer.model")))


def test_tokenizer_pieces_are_single_characters_with_fixed_ids(tok):
    task.check_tokenizer(tok)
    assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id, tok.vocab_size) == (0, 1, 2, 0, 16)
    assert tok.encode("07+12=") == [3, 10, 13, 4, 5, 15]  # '0'=3 .. '9'=12, '+'=13, '-'=14, '='=15
    assert tok.encode("891") == [11, 12, 4]
    assert tok.decode([12, 4]) == "91"
    ids = task.prompt_batch(tok, [(0, 0), (7, 12), (99, 99)])
    assert ids.shape == (3, 7) and (ids[:, 0] == tok.bos_id).all()
    np.testing.assert_array_equal(ids[1], [1, 3, 10, 13, 4, 5, 15])


def test_exact_match_needs_the_exact_digits_then_eos(tok):
    pairs = [(7, 12)] * 5 + [(99, 99)]
    eos, pad = tok.eos_id, tok.pad_id
    nine, one, eight = tok.encode("9")[0], tok.encode("1")[0], tok.encode("8")[0]
    response = np.array([
        [nine, one, eos, pad, pad, pad],  # right
        [nine, one, nine, eos, pad, pad],  # an extra digit
        [nine, one, one, one, one, one],  # no EOS within max_new_tokens
        [one, nine, eos, pad, pad, pad],  # not reversed
        [nine, one, eos, nine, nine, nine],  # junk after EOS is ignored
        [eight, nine, one, eos, pad, pad],  # 198 reversed
    ])  # fmt: skip
    np.testing.assert_array_equal(task.exact_match(tok, response, pairs), [1, 0, 0, 0, 1, 1])


# ------------------------------------------------------------------------------------------------ evaluator
def test_evaluator_chunks_and_pads_without_changing_answers(tok):
    """Greedy answers of 5 problems in chunks of 2 (the last padded) equal those of one batch of 5."""
    import mindspore as ms
    from arith_eval import Evaluator

    from mindrlhf.configs.run_config import load_run_config
    from mindrlhf.models.llama.model import LlamaForCausalLM

    mode = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)  # the demo's mode; restored below (later tests expect the default)
    try:
        ms.set_seed(0)
        model = LlamaForCausalLM(load_run_config(os.path.join(ROOT, "examples", "arithmetic_demo",
                                                              "arith_llama.yaml")).model_config)  # fmt: skip
        pairs = [(1, 2), (30, 4), (55, 55), (9, 90), (0, 7)]
        chunked = Evaluator(model, tok, batch=2).responses(pairs, sampled=False)
        whole = Evaluator(model, tok, batch=5).responses(pairs, sampled=False)
    finally:
        ms.set_context(mode=mode)
    np.testing.assert_array_equal(chunked, whole)
    assert chunked.shape == (5, 6)


# ------------------------------------------------------------------------------------------------ end to end
GRPO_MERGED = importlib.util.find_spec("mindrlhf.rewards") is not None


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `run_demo.py --quick` (with `--skip_rl` until the GRPO trainer is merged): (output dir, summary)."""
    out = tmp_path_factory.mktemp("arith") / "demo"
    cmd = [sys.executable, os.path.join(ROOT, "examples", "arithmetic_demo", "run_demo.py"), "--quick",
           "--output_dir", str(out)] + ([] if GRPO_MERGED else ["--skip_rl"])  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out / "summary.json")
    return out, json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_quick_demo_sft_stops_weak_on_held_out(quick_run):
    """SFT stops by probe accuracy with the model weak but not blank on held-out problems: sampled accuracy in
    (5 %, 40 %], greedy above sampled (the prototype: ~2x at the stopping point)."""
    out, summary = quick_run
    assert summary["leak_check"] == "passed" and summary["sft"]["reached"]
    probe = summary["sft"]["probe"]
    earlier = [p["sampled"] for p in probe[:-1]]
    assert probe[-1]["sampled"] >= 0.25 and all(a < 0.25 for a in earlier), probe  # the first probe >= 25 %
    before = summary["accuracy_before"]
    assert 0.05 < before["sampled"] <= 0.40, before
    assert before["greedy"] > before["sampled"], before
    for artefact in (
        "report.md",
        "sft/model.yaml",
        "sft/model.ckpt",
        "data/tokenizer.model",
        "data/sft.mindrecord",
    ):
        assert (out / artefact).exists(), artefact


@pytest.mark.slow
@pytest.mark.skipif(not GRPO_MERGED, reason="the GRPO trainer (mindrlhf.rewards, train.py --advantage_estimator) "
                    "is not merged yet")  # fmt: skip
def test_quick_demo_grpo_raises_held_out_accuracy(quick_run):
    """GRPO with the exact-match reward raises held-out sampled accuracy by at least 12 points in the quick budget
    of 200 iterations (the full demo's target is +25 in 300). Measured: a minimal GRPO loop on mindrlhf's
    TrainStep + generate went 28.9 -> 51.7 % by iteration 200 (seed 0); the PyTorch prototype +19 to +31 over 3
    seeds; two evaluations of one model differ by ~2 points."""
    out, summary = quick_run
    before, after = summary["accuracy_before"], summary["accuracy_after"]
    assert after["sampled"] - before["sampled"] >= 0.12, (before, after)
    assert after["greedy"] >= before["greedy"] - 0.05, (before, after)
    curve = summary["estimators"]["grpo"]["reward_curve"]
    assert np.mean([r["reward"] for r in curve[-10:]]) > np.mean([r["reward"] for r in curve[:10]])
    for artefact in ("arithmetic_curve.png", "rl_grpo/metrics.jsonl", "data/rl_prompts.mindrecord"):
        assert (out / artefact).exists(), artefact


def test_estimator_table_mean_and_spread_by_hand():
    from compare_estimators import markdown, missing_runs, table

    def summary(before, after, greedy):
        run = {"accuracy_after": {"sampled": after, "greedy": greedy}, "seconds": 100.0, "iterations": 300}
        return {"accuracy_before": {"sampled": before, "greedy": 0.6}, "estimators": {"grpo": run}}

    summaries = {0: summary(0.30, 0.80, 0.90), 1: summary(0.20, 0.50, 0.70), 2: summary(0.25, 0.65, 0.80)}
    rows = table(summaries, ["grpo", "rloo"])
    assert list(rows) == ["grpo"]  # an estimator no seed ran is left out, not reported as zeros
    r = rows["grpo"]
    assert r["seeds"] == [0, 1, 2]
    # gains 50, 30, 40; after 80, 50, 65; greedy after 90, 70, 80, greedy gains over 60: 30, 10, 20
    assert r["gain"] == pytest.approx({"mean": 40.0, "min": 30.0, "max": 50.0})
    assert r["sampled_after"] == pytest.approx({"mean": 65.0, "min": 50.0, "max": 80.0})
    assert r["greedy_after"] == pytest.approx({"mean": 80.0, "min": 70.0, "max": 90.0})
    assert r["greedy_gain"] == pytest.approx({"mean": 20.0, "min": 10.0, "max": 30.0})
    assert r["seconds_per_iteration"] == pytest.approx(1 / 3)
    missing = missing_runs(summaries, [0, 1, 2, 3], ["grpo", "rloo"])
    assert missing == ["rloo seed 0", "rloo seed 1", "rloo seed 2", "grpo seed 3", "rloo seed 3"]
    text = markdown(rows, summaries, missing)
    assert (
        "| grpo | 0, 1, 2 | 300 | +40.0 [+30.0, +50.0] | 65.0 [50.0, 80.0] | 80.0 [70.0, 90.0] | "
        "+20.0 [+10.0, +30.0] | 100 (0.33) |"
    ) in text
    assert "seed 1 sampled 20.0 %, greedy 60.0 %" in text and "Not finished: rloo seed 0, " in text


def _result(iterations, sampled):
    return {"iterations": iterations, "seconds": 10.0, "accuracy_after": {"sampled": sampled, "greedy": 0.9},
            "eos_rate_after": 1.0, "curve": [{"iteration": iterations, "sampled": sampled}], "reward_curve": []}  # fmt: skip


def test_resumed_demo_keeps_finished_runs_and_restarts_the_rest(tmp_path, capsys):
    """The comparison is resumable: a finished run (result.json, same budget) is skipped; a run cut short or of
    another budget is removed; the summary collects every finished estimator of the folder in a fixed order."""
    import run_demo

    for name, iterations, sampled in (("rloo", 400, 0.5), ("grpo", 400, 0.7), ("dr_grpo", 200, 0.6)):
        (tmp_path / f"rl_{name}").mkdir()
        (tmp_path / f"rl_{name}" / "result.json").write_text(json.dumps(_result(iterations, sampled)))
    (tmp_path / "rl_gae" / "checkpoints").mkdir(parents=True)  # cut short: no result.json
    assert run_demo.finished_run(str(tmp_path / "rl_grpo"), 400)
    assert not run_demo.finished_run(str(tmp_path / "rl_gae"), 400) and not (tmp_path / "rl_gae").exists()
    assert (
        not run_demo.finished_run(str(tmp_path / "rl_dr_grpo"), 400)
        and not (tmp_path / "rl_dr_grpo").exists()
    )
    summary = {"seed": 0, "split": {"sft": 7000}, "leak_check": "passed", "reward_func": "m:f",
               "sft": {"steps": 10, "seconds": 1.0, "stop_accuracy": 0.25},
               "accuracy_before": {"sampled": 0.3, "greedy": 0.6}}  # fmt: skip
    run_demo._write_summary(str(tmp_path), summary, ["gae", "rloo"], 0.0, {}, final=True)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert list(saved["estimators"]) == ["grpo", "rloo"]  # ESTIMATORS order; gae and dr_grpo were removed
    assert saved["estimator"] == "rloo" and saved["gain_sampled"] == pytest.approx(
        0.2
    )  # first asked, finished
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(tmp_path / "summary.json")


def test_sft_of_another_seed_is_not_reused(tmp_path):
    import run_demo

    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "model.yaml").write_text("model: {}\n")
    (tmp_path / "sft" / "result.json").write_text(json.dumps({"seed": 1, "sft": {"steps": 5}, "before": {}}))
    with pytest.raises(SystemExit, match="SFT of seed 1, not --seed 0"):
        run_demo.train_or_reuse_sft(str(tmp_path), "unused.mindrecord", None, None, seed=0)


def test_reward_is_a_strict_string_match_unlike_a_numeric_one():
    import yaml

    from mindrlhf.rewards import exact_match

    responses = ["91", "2", "02", "91+3", "91=", " 91 ", "911111", ""]
    answers = ["91", "02", "02", "91", "91", "91", "91", "0"]
    assert exact_match([""] * 8, responses, answers) == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
    with open(os.path.join(ROOT, "examples", "arithmetic_demo", "grpo_arith.yaml"), encoding="utf-8") as f:
        assert yaml.safe_load(f)["reward_funcs"] == ["mindrlhf.rewards:exact_match"]
