"""bench/bench_dpo.py cannot rot: its smoke mode (our side only, tiny model, 1 warm-up + 1 timed step) runs."""

from test_bench_smoke import run_bench


def test_bench_dpo_smoke():
    stdout, result = run_bench("bench_dpo.py", "--smoke")
    steps = [line for line in stdout.splitlines() if line.strip().startswith("ours step ")]
    assert len(steps) == 2 and "loss 0.693147" in steps[0], stdout  # policy == reference: loss = log 2
    assert "trl_sec_per_step" not in result  # smoke mode never needs the TRL environment
    assert 0 < result["ours_sec_per_step"] < result["ours_first_step_sec"]  # the first step compiles
    assert result["ours_compiled_graphs_after_warmup"] > 0
    assert result["shape"]["batch"] == 4 and result["threads"] == 1
