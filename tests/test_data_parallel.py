"""Data parallel on CPU, for real: `mindrlhf/train_sft.py` on 2 msrun processes (mccl, gradients averaged) against
one process over the same global batches. SFT has no sampling, so the two runs must agree to float32 rounding.
"""

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from conftest import ROOT
from test_sft_rm import TINY, V, _write

from mindrlhf.configs.run_config import write_run_yaml
from mindrlhf.data.reader import read_dataset
from mindrlhf.utils.checkpoint import read_checkpoint
from mindrlhf.utils.metrics import read_metrics

WORLD, B, STEPS = 2, 4, 6  # ranks, per-rank batch (global batch WORLD * B), optimiser steps
ROWS = 60  # not a multiple of the global batch (8): both runs drop the same 4-row tail of each epoch
ARGS = ["--max_steps", str(STEPS), "--learning_rate", "3e-3", "--warmup_steps", "2", "--log_interval", "1",
        "--seed", "7"]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """An SFT dataset whose rows have 2..9 target tokens (so the ranks of one step hold different token counts),
    a model YAML for one process and one with `use_parallel: true`, data_parallel 2 (random init, seeded)."""
    root = tmp_path_factory.mktemp("dp")
    rng = np.random.RandomState(0)
    prompts = [list(rng.randint(4, V, rng.randint(2, 7))) for _ in range(ROWS)]
    responses = [list(rng.randint(4, V, rng.randint(1, 9))) for _ in range(ROWS)]
    single = write_run_yaml(TINY, str(root / "single.yaml"))
    raw = yaml.safe_load(open(single))
    raw["use_parallel"] = True
    raw["parallel"]["parallel_mode"] = 0
    raw["parallel_config"]["data_parallel"] = WORLD
    with open(root / "dp.yaml", "w") as f:
        yaml.safe_dump(raw, f, sort_keys=False)
    return {"root": root, "sft": _write("sft", root / "sft.mindrecord", prompts, responses),
            "single": single, "dp": str(root / "dp.yaml")}  # fmt: skip


def test_ranks_read_disjoint_shards_whose_union_is_the_single_process_batch(data):
    """Step s: rank r's batch is rows order[2Bs + r :: 2] of the epoch's permutation, so the two ranks together
    read exactly the rows batch s of one process with batch 2B reads, and never the same row."""
    full = read_dataset(data["sft"], "sft", batch_size=WORLD * B, seed=7)
    shards = [
        read_dataset(data["sft"], "sft", batch_size=B, seed=7, num_shards=WORLD, shard_id=r)
        for r in range(WORLD)
    ]
    assert len(full) == len(shards[0]) == len(shards[1]) == ROWS // (WORLD * B)
    for epoch in range(2):
        mine = [s.epoch_indices(epoch).reshape(-1, B) for s in shards]
        for step, rows in enumerate(full.epoch_indices(epoch).reshape(-1, WORLD * B)):
            assert not set(mine[0][step]) & set(mine[1][step])
            assert sorted(np.concatenate([m[step] for m in mine])) == sorted(rows), (epoch, step)


def _env():
    """msrun starts workers as `python`: this interpreter's directory first on PATH; the repository importable."""
    py_bin = os.path.dirname(sys.executable)
    return {**os.environ, "PATH": py_bin + os.pathsep + os.environ.get("PATH", ""), "PYTHONPATH": ROOT}


def _single(data, save_dir, *extra):
    """`python -m mindrlhf.train_sft`, one process, run in the temporary directory (MindSpore litters its cwd)."""
    cmd = [sys.executable, "-m", "mindrlhf.train_sft", "--model_config", data["single"], "--dataset", data["sft"],
           "--save_dir", str(save_dir), *extra]  # fmt: skip
    proc = subprocess.run(cmd, cwd=data["root"], env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"


def _msrun(data, save_dir):
    """train_sft.py under `msrun --worker_num=2` on this machine; returns the workers' logs."""
    py_bin = os.path.dirname(sys.executable)
    log_dir = os.path.join(save_dir, "msrun_log")
    cmd = [os.path.join(py_bin, "msrun"), f"--worker_num={WORLD}", f"--local_worker_num={WORLD}",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", f"--log_dir={log_dir}", "--join=True",
           os.path.join(ROOT, "mindrlhf", "train_sft.py"), "--model_config", data["dp"], "--dataset", data["sft"],
           "--save_dir", str(save_dir), "--batch_size", str(B), *ARGS, "--save_rank_weights"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=data["root"], env=_env(), capture_output=True, text=True, timeout=300)
    logs = [open(os.path.join(log_dir, f"worker_{r}.log")).read() for r in range(WORLD)]
    assert proc.returncode == 0, f"msrun exited {proc.returncode}\n{proc.stdout[-2000:]}\n" + "\n".join(
        f"--- worker {r}\n{log[-3000:]}" for r, log in enumerate(logs)
    )
    return logs


def _max_diff(a, b):
    assert sorted(a) == sorted(b)
    return max(float(np.abs(a[k].asnumpy() - b[k].asnumpy()).max()) for k in a)


@pytest.mark.slow
def test_two_msrun_ranks_train_like_one_process_over_the_global_batch(data):
    root = data["root"]
    start = time.perf_counter()
    _single(data, root / "single", "--batch_size", str(WORLD * B), "--save_interval", "3", *ARGS)
    single_s = time.perf_counter() - start
    logs = _msrun(data, root / "dp")
    dp_s = time.perf_counter() - start - single_s
    print(f"single process {single_s:.1f} s, msrun 2 ranks {dp_s:.1f} s")

    # Both ranks joined over mccl, trained every step and logged; only rank 0 wrote the run's files.
    dp = root / "dp"
    for r, log in enumerate(logs):
        assert f"rank {r} of {WORLD} (mccl, launched by msrun)" in log, log[-2000:]
        assert "auto-parallel context: {'parallel_mode': 'data_parallel', 'gradients_mean': True" in log
        assert f"SFT Step: {STEPS}/{STEPS} |" in log and f"done: {STEPS} steps" in log
    assert os.path.isfile(dp / "train.log") and os.path.isfile(dp / "train_rank1.log")
    for name in ("model.ckpt", "model.yaml", "metrics.jsonl", "checkpoints/latest"):
        assert os.path.exists(dp / name), name
    assert "rank 1" not in open(dp / "train.log").read()

    # Gradients are all-reduced: the two replicas end bit-identical (and rank 0 exported those weights).
    ranks = [read_checkpoint(str(dp / f"rank_{r}" / "model.ckpt")) for r in range(WORLD)]
    between_ranks = _max_diff(ranks[0], ranks[1])
    assert between_ranks == 0.0
    assert _max_diff(ranks[0], read_checkpoint(str(dp / "model.ckpt"))) == 0.0

    # Same rows per step, global token mean: loss and token count of every step match the single process.
    one, two = read_metrics(str(root / "single" / "metrics.jsonl")), read_metrics(str(dp / "metrics.jsonl"))
    assert [m["step"] for m in one] == [m["step"] for m in two] == list(range(1, STEPS + 1))
    loss_one = np.array([m["sft/loss"] for m in one])
    loss_two = np.array([m["sft/loss"] for m in two])
    # float32 sums in another order (two half-batches, then an all-reduce): measured 5e-7 on the loss (1.2e-7
    # relative) and <= 4e-7 on the weights after 6 AdamW steps. The tolerances leave ~100x for other CPUs / thread
    # counts and stay far below the breakages: rank 0's own-shard mean (per-rank token mean) is off by 3e-2,
    # and the last 3 steps move the weights by 3e-3.
    np.testing.assert_allclose(loss_two, loss_one, rtol=2e-5)
    single_w = read_checkpoint(str(root / "single" / "model.ckpt"))
    to_single = _max_diff(ranks[0], single_w)
    moved = _max_diff(
        single_w, read_checkpoint(str(root / "single" / "checkpoints" / "step_000003" / "model.ckpt"))
    )
    print(f"loss |diff| max {np.abs(loss_two - loss_one).max():.3g}; weights: ranks {between_ranks}, "
          f"2 ranks vs 1 process {to_single:.3g}, moved by training {moved:.3g}")  # fmt: skip
    assert to_single < 1e-5 and moved > 1e-3
    assert [m["sft/target_tokens"] for m in two] == [m["sft/target_tokens"] for m in one]


# ---------------------------------------------------------------------------------------------------------------
# PPO: two msrun ranks on given rollouts equal one process on the global batch (tests/ppo_dp_worker.py).


def _run_ppo_worker(out_dir, world):
    """tests/ppo_dp_worker.py as one process (world 1) or under msrun; returns {name: npz} per process."""
    os.makedirs(out_dir, exist_ok=True)
    script = os.path.join(ROOT, "tests", "ppo_dp_worker.py")
    if world == 1:
        cmd = [sys.executable, script, str(out_dir)]
    else:
        py_bin = os.path.dirname(sys.executable)
        cmd = [os.path.join(py_bin, "msrun"), f"--worker_num={world}", f"--local_worker_num={world}",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}", f"--log_dir={out_dir}/msrun_log",
               "--join=True", script, str(out_dir)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=out_dir, env=_env(), capture_output=True, text=True, timeout=600)
    logs = "".join(
        f"--- {name}\n{open(os.path.join(out_dir, 'msrun_log', name)).read()[-3000:]}"
        for name in (sorted(os.listdir(os.path.join(out_dir, "msrun_log"))) if world > 1 else [])
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}\n{logs}"
    names = ["single.npz"] if world == 1 else [f"rank_{r}.npz" for r in range(world)]
    return [dict(np.load(os.path.join(out_dir, n))) for n in names]


@pytest.mark.slow
def test_two_msrun_ppo_ranks_on_given_rollouts_equal_one_process_on_the_global_batch(tmp_path):
    """Same rollouts (built from a fixed seed in the worker), rank r holding rows r*B..(r+1)*B-1 of the global
    batch of 2B: score normalisation, whitening and the adaptive KL controller use global statistics, the loss
    means run over every rank's tokens, and gradients are averaged, so the ranks train like one process."""
    from ppo_dp_worker import GLOBAL_B, ITERATIONS, KEYS

    (single,) = _run_ppo_worker(tmp_path / "single", 1)
    ranks = _run_ppo_worker(tmp_path / "dp", WORLD)
    b = GLOBAL_B // WORLD
    weights = sorted(k for k in single if ":" in k)
    for r, rank in enumerate(ranks):
        for it in range(ITERATIONS):
            # Step 3 on this rank's rows equals the single process's step 3 on the same rows.
            for key in ("rewards", "advantages", "returns"):
                np.testing.assert_allclose(
                    rank[f"{key}_{it}"], single[f"{key}_{it}"][r * b : (r + 1) * b], rtol=1e-6, atol=1e-6,
                    err_msg=f"rank {r} {key} {it}",
                )  # fmt: skip
            # beta adapted with the global batch; score statistics over every rank's scores.
            np.testing.assert_allclose(rank[f"kl_coef_{it}"], single[f"kl_coef_{it}"], rtol=1e-9)
            np.testing.assert_allclose(rank[f"score_stats_{it}"], single[f"score_stats_{it}"], rtol=1e-9)
            # Losses and metrics of the global mini-batch (float32 sums in another order).
            np.testing.assert_allclose(
                rank[f"metrics_{it}"], single[f"metrics_{it}"], rtol=2e-5, atol=1e-6,
                err_msg=f"rank {r} iteration {it}: {KEYS}",
            )  # fmt: skip
        # Weights: identical on both ranks, within float32 rounding of the single process.
        for k in weights:
            np.testing.assert_array_equal(rank[k], ranks[0][k], err_msg=k)
        to_single = max(float(np.abs(rank[k] - single[k]).max()) for k in weights)
        # Measured 1.2e-6 after 4 AdamW steps at lr 3e-3; training moved the weights by ~1e-2.
        assert to_single < 2e-5 and float(single["moved"]) > 1e-3, (to_single, float(single["moved"]))
    assert single["kl_coef_1"] != single["kl_coef_0"]  # the adaptive controller moved


class _ThreadAllGather:
    """Stands in for `ops.AllGather` between threads: every rank's float32 tensor, concatenated in rank order."""

    def __init__(self, world):
        import threading

        self.barrier, self.slots = threading.Barrier(world), [None] * world

    def for_rank(self, rank):
        from mindspore import Tensor

        def gather(tensor):
            self.slots[rank] = tensor.asnumpy()
            self.barrier.wait()
            out = np.concatenate(self.slots, 0)
            self.barrier.wait()
            return Tensor(out)

        return gather


def _on_two_ranks(fn, parts):
    """fn(DataParallel of rank r, parts[r]) on two threads linked by `_ThreadAllGather`; returns both results."""
    import threading

    from mindrlhf.trainer.data_parallel import DataParallel

    link, results = _ThreadAllGather(2), [None, None]

    def run(rank):
        ranks = DataParallel(world=1, rank=rank)
        ranks.world, ranks._gather = 2, link.for_rank(rank)
        results[rank] = fn(ranks, parts[rank])

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_cross_rank_whitening_keeps_its_digits_when_the_mean_dwarfs_the_std():
    """Advantages with mean/std = 1000 split over two ranks (different token counts): two-pass float64 statistics
    over both ranks equal `ppo_math.masked_whiten` on the whole batch to 1e-9; the old one-pass float32 form
    (sum x^2 - n mean^2, summed by a float32 AllReduce) is off by more than 1e-3."""
    from mindrlhf.algorithms import ppo_math

    rng = np.random.RandomState(0)
    x = (1000.0 + rng.normal(0, 1, (8, 6))).astype(np.float32)
    mask = (rng.uniform(size=(8, 6)) < 0.7).astype(np.float32)
    mask[:4, 4:] = 0  # rank 0 holds fewer tokens
    parts = [(x[:4], mask[:4]), (x[4:], mask[4:])]
    got = _on_two_ranks(lambda ranks, part: ranks.whiten(*part), parts)
    expected = ppo_math.masked_whiten(x, mask)
    np.testing.assert_allclose(np.concatenate(got), expected, atol=1e-9)

    def one_pass_float32(ranks, part):
        xs, ms_ = part
        sums = [np.float32((xs * ms_).sum()), np.float32(ms_.sum()), np.float32((xs * xs * ms_).sum())]
        total, count, squares = np.sum(ranks.gather(np.array(sums, np.float32)[None]).astype(np.float32), 0)
        mean = total / count
        var = max(squares - count * mean * mean, 0.0) / (count - 1)
        return (xs - mean) / np.sqrt(var + 1e-8) * ms_

    old = np.concatenate(_on_two_ranks(one_pass_float32, parts))
    assert np.abs(old - expected).max() > 1e-3  # measured 3e-3 here (the issue saw 3e-2 on a larger batch)


def test_cross_rank_sums_and_gathers_are_float64_and_identical_on_every_rank():
    values = [np.array([1e8 + 0.25, -3.0]), np.array([1e-3, 7.5])]
    sums = _on_two_ranks(lambda ranks, v: ranks.sum(v), values)
    np.testing.assert_array_equal(sums[0], sums[1])
    np.testing.assert_allclose(sums[0], [1e8 + 0.251, 4.5], rtol=1e-14)  # float32 alone: 1e8 + 0.25 -> 1e8
    gathered = _on_two_ranks(lambda ranks, v: ranks.gather(v), values)
    np.testing.assert_allclose(gathered[0], np.concatenate(values), rtol=1e-14)
