"""bench/bench_ppo.py cannot rot: its smoke mode (our side only, tiny model, one iteration) runs end to end."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_bench(script, *args):
    """Run bench/<script> with args from the repository root; returns (stdout, the last line's JSON)."""
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc.stdout, json.loads(proc.stdout.strip().splitlines()[-1])


def test_bench_ppo_smoke_with_the_profiler(tmp_path):
    """One smoke run with --profile (one MindSpore start-up instead of two, for the suite's time): the iteration
    line and JSON fields of a plain smoke run, plus the profiler's kernel figures and per-op-type table."""
    stdout, result = run_bench("bench_ppo.py", "--smoke", "--profile", str(tmp_path))
    assert any(line.strip().startswith("ours iteration 0: total ") for line in stdout.splitlines()), stdout
    assert "trl_sec_per_iter" not in result  # smoke mode never needs the TRL environment
    phases = result["ours_generate_sec"] + result["ours_score_sec"] + result["ours_train_sec"]
    assert 0 < phases <= result["ours_sec_per_iter"]
    assert result["ours_peak_rss_mb"] > 100
    assert result["ours_compiled_graphs_after_warmup"] > 0  # the compile counter sees our graphs
    assert result["shape"]["batch"] == 4 and result["shape"]["response"] == 6
    assert result["ours_kernels_per_iter"] > 100 and result["ours_kernel_sec_per_iter"] > 0
    assert "MatMul" in stdout  # the per-op-type table


def test_bench_sampler_smoke():
    _, result = run_bench("bench_sampler.py", "--vocab", "2000", "--reps", "2")
    assert result["peaked_same_tokens"] and result["flat_same_tokens"]
    assert result["peaked_prefilter_ms"] > 0 and result["flat_sort_ms"] > 0
