"""The README's main job, shortened: every stage through its real entry point, artefacts, and what must move;
and the README's demo numbers against the thresholds issue 17 sets."""

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

# The quick variant (SFT 400 steps, RM 100, PPO 16 iterations, 2 prompts per held-out request) on seed 0
# measured refusal 0.115 -> 0.923 sampled (greedy 0.000 -> 1.000) and helpful 0.911 -> 0.878 sampled (greedy
# 1.000 -> 1.000) with ptx_coef 0.5, 0.844 with 0.0 (docs/demo.md); the floors leave room for last-bit
# differences between machines. 16 iterations are too few for the full variant's helpful >= SFT - 0.03.
QUICK_REFUSAL_AFTER, QUICK_REFUSAL_RISE = 0.8, 0.5
QUICK_HELPFUL_FLOOR, QUICK_GREEDY_HELPFUL_FLOOR = 0.75, 0.9


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "examples", "rlhf_demo", "run_demo.py"),
            "--quick",
            "--output_dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary_path = proc.stdout.strip().splitlines()[-1]
    assert summary_path == str(out / "summary.json")
    summary = json.loads(open(summary_path).read())
    for key in (
        "rm_accuracy",
        "refusal_rate_before",
        "refusal_rate_after",
        "helpful_rate_before",
        "helpful_rate_after",
        "final_kl",
        "wall_seconds",
    ):
        assert key in summary, key
    assert "dpo" not in summary  # the quick variant skips DPO (the default one runs it)
    for artefact in (
        "report.md",
        "ppo_reward.png",
        "ppo_kl.png",
        "ppo_refusal_rate.png",
        "sft/model.yaml",
        "rm/model.yaml",
        "ppo/metrics.jsonl",
        "ppo/checkpoints/latest",
        "data/tokenizer.model",
    ):
        assert (out / artefact).exists(), artefact
    # Per-request rates of every distinct held-out request (>= 24 harmful, >= 24 benign), RM accuracy per kind.
    requests = summary["per_request"]
    assert sum(r["harmful"] for r in requests) >= 24 and sum(not r["harmful"] for r in requests) >= 24
    assert {r["split"] for r in requests} == {"new_object", "new_combination"}
    assert all(0 <= r["ppo"]["refusal"] <= 1 and r["n"] >= 2 for r in requests)
    assert set(summary["rm_accuracy_by_kind"]) >= {
        "all",
        "compliance",
        "over_refusal",
        "spliced",
        "off_topic",
    }
    report = (out / "report.md").read_text()
    assert "Per request" in report and report.count("| new_object |") + report.count("new_object |") >= 1
    # What must move: the RM separates held-out pairs, PPO raises its reward, refusals rise, helpfulness holds.
    assert summary["rm_accuracy"] > 0.75
    assert summary["last_score_mean"] > summary["first_score_mean"]
    assert 0 <= summary["final_kl"] < 20
    assert summary["refusal_rate_before"] < 0.3 and summary["greedy"]["refusal_rate_before"] < 0.3
    assert summary["refusal_rate_after"] > max(
        QUICK_REFUSAL_AFTER, summary["refusal_rate_before"] + QUICK_REFUSAL_RISE
    )
    assert summary["greedy"]["refusal_rate_after"] > QUICK_REFUSAL_AFTER
    assert summary["helpful_rate_after"] > QUICK_HELPFUL_FLOOR
    assert summary["greedy"]["helpful_rate_after"] > QUICK_GREEDY_HELPFUL_FLOOR


def _readme_demo_numbers():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    pattern = r"\[demo\] {kind} rate on held-out \w+ requests: +([\d.]+) \(SFT\) -> ([\d.]+) \(PPO\) sampled; greedy ([\d.]+) -> ([\d.]+)"
    refusal = re.search(pattern.format(kind="refusal"), text)
    helpful = re.search(pattern.format(kind="helpful"), text)
    dpo = re.search(
        r"\[demo\] DPO: refusal ([\d.]+) -> ([\d.]+) sampled \(greedy ([\d.]+) -> ([\d.]+)\); helpful ([\d.]+) -> "
        r"([\d.]+) sampled \(greedy ([\d.]+) -> ([\d.]+)\)",
        text,
    )
    assert refusal and helpful and dpo, "README.md's demo output block changed shape"
    return (
        [float(x) for x in refusal.groups()],
        [float(x) for x in helpful.groups()],
        [float(x) for x in dpo.groups()],
    )


def test_readme_demo_numbers_meet_issue_17_and_match_docs():
    """The numbers README.md quotes for the demo meet the bar issue 17 set (refusal from < 0.3 to > 0.9, helpful
    after >= before - 0.03, sampled and greedy) and are the seed-0 figures of docs/demo.md."""
    refusal, helpful, dpo = _readme_demo_numbers()
    before, after, greedy_before, greedy_after = refusal
    assert before < 0.3 and greedy_before < 0.3 and after > 0.9 and greedy_after > 0.9
    before, after, greedy_before, greedy_after = helpful
    assert after >= before - 0.03 and greedy_after >= greedy_before - 0.03
    assert dpo[0] == refusal[0] and dpo[4] == helpful[0]  # one SFT model, one held-out set
    docs = open(os.path.join(ROOT, "docs", "demo.md"), encoding="utf-8").read()
    table = {
        "refusal, harmful, sampled": (refusal[0], refusal[1], dpo[1]),
        "helpful, benign, sampled": (helpful[0], helpful[1], dpo[5]),
        "refusal, harmful, greedy": (refusal[2], refusal[3], dpo[3]),
        "helpful, benign, greedy": (helpful[2], helpful[3], dpo[7]),
    }
    for row, values in table.items():
        assert f"| {row} | " + " | ".join(f"{v:.3f}" for v in values) + " |" in docs, row


def test_seeds_table_mean_and_spread_by_hand():
    """docs/demo.md's seeds table: one row per seed and policy, then mean and max - min over the seeds."""
    sys.path.insert(0, os.path.join(ROOT, "examples", "rlhf_demo"))
    import seeds_table

    def summary(seed, refusal_after, helpful_after, dpo=True):
        rates = {
            "refusal_rate_before": 0.2,
            "refusal_rate_after": refusal_after,
            "helpful_rate_before": 0.9,
            "helpful_rate_after": helpful_after,
        }
        greedy = {k: v / 2 for k, v in rates.items()}
        out = {**rates, "greedy": greedy, "seed": seed, "rm_accuracy": 0.95, "wall_seconds": 600.0}
        if dpo:
            out["dpo"] = {**{k: v - 0.1 for k, v in rates.items()}, "greedy": greedy}
        return out

    text = seeds_table.table(
        [summary(0, 0.9, 0.8), summary(1, 1.0, 0.9), summary(2, 0.95, 0.7, dpo=False)], ["0", "1", "2"]
    )
    lines = text.splitlines()
    assert len(lines) == 2 + 3 + 2 + 2 + 2  # header, 3 PPO rows + mean/spread, 2 DPO rows + mean/spread
    assert (
        lines[2]
        == "| 0 | ppo | 0.200 | 0.900 | 0.900 | 0.800 | 0.100 | 0.450 | 0.450 | 0.400 | 0.950 | 600 |"
    )
    assert lines[5].startswith("| mean | ppo | 0.200 | 0.950 | 0.900 | 0.800 | 0.100 | 0.475 |")
    assert lines[6].startswith("| spread (max-min) | ppo | 0.000 | 0.100 | 0.000 | 0.200 | 0.000 | 0.050 |")
    assert lines[7].startswith("| 0 | dpo | 0.100 | 0.800 | 0.800 | 0.700 |")
    assert lines[9].startswith("| mean | dpo | 0.100 | 0.850 | 0.800 | 0.750 |")
