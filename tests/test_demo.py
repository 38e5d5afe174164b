"""The README's main job, shortened: every stage through its real entry point, artefacts, and what must move."""

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT


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
    # The reward model separates held-out pairs clearly better than chance, and PPO raises the reward it optimises.
    assert summary["rm_accuracy"] > 0.75
    assert summary["last_score_mean"] > summary["first_score_mean"]
    assert 0 <= summary["final_kl"] < 20
