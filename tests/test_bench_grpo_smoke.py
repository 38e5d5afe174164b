"""bench/bench_grpo.py cannot rot: its smoke mode (our GRPO side only, tiny model, one iteration) runs end to end."""

from test_bench_smoke import run_bench


def test_bench_grpo_smoke():
    stdout, result = run_bench("bench_grpo.py", "--smoke")
    assert any(line.strip().startswith("ours-grpo iteration 0: total ") for line in stdout.splitlines()), (
        stdout
    )
    assert "trl_sec_per_iter" not in result and "ours_ppo_sec_per_iter" not in result  # smoke: ours only
    assert 0 < result["ours_generate_sec"] + result["ours_train_sec"] <= result["ours_sec_per_iter"]
    assert result["ours_peak_rss_mb"] > 100 and result["ours_compiled_graphs_after_warmup"] > 0
    assert result["shape"]["prompts"] == 2 and result["shape"]["generations"] == 4
