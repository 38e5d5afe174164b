"""The memory plan (mindrlhf/tools/plan_memory.py) against measured peaks: real PPO iterations on CPU, one child
process per shape, RSS sampled per phase.

    python bench/bench_memory_plan.py                 # the shapes in SHAPES, one after the other (~5-10 min)
    python bench/bench_memory_plan.py --shapes tiny default
    python bench/bench_memory_plan.py --smoke         # the tiny shape, one iteration (a quick check)

Each child builds the four roles of bench/bench_ppo.py (random Llama, fp32, GRAPH mode, EOS off so every
response is N tokens) and runs `PPOTrainer.make_experience` + `train_step` twice. A thread reads the process's
RSS (/proc/self/statm) every 2 ms and keeps the peak of each phase (build, generate, score, train; iteration 0
compiles, iteration 1 is the steady state); the run's peak is ru_maxrss.

What CPU adds to the model's bytes is measured, not folded into the formula, as its own "runtime overhead":
- runtime baseline: the child's RSS after importing MindSpore and mindrlhf and setting the context, before any
  model exists (interpreter, MindSpore's libraries and runtime threads); measured in every child;
- graph workspace: what MindSpore's CPU graphs keep beyond the tensors the plan counts. Two effects, one term each
  (docs/benchmarks.md, "What MindSpore's CPU build costs"): ~100-150 KB per compiled kernel node, which grows
  with the number of layers (a per layer), and kernel buffers that grow with the tensors (Transpose index tables,
  broadcast workspaces), which each compiled graph keeps for itself on CPU: k x the sum of the plan's phases.
  a and k are measured at two calibration shapes (`--calibrate`, default `tiny` and `default`: at `tiny` the
  model's tensors are < 1 MB, so its peak is baseline + a x 2 layers) and applied unchanged at every other shape,
  whose ratio is the validation. The calibration shapes' own ratios are 1 by construction and marked.
estimate = plan (resident + largest phase) + baseline + a x layers + k x sum of phases; the target is within 25%
of the measured peak at every other shape. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's mindrlhf, also for the parent process
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1024**2

# name: vocab, hidden, intermediate, layers, heads, kv_heads, batch, prompt, response, mini_batch
SHAPES = {
    "tiny": (64, 32, 48, 2, 4, 2, 4, 8, 6, 4),  # bench_ppo.py --smoke
    "default": (1000, 256, 688, 4, 4, 2, 8, 32, 32, 8),  # bench_ppo.py's default
    "mid": (4000, 512, 1376, 4, 8, 4, 16, 32, 64, 16),
    "batch32": (1000, 256, 688, 4, 4, 2, 32, 32, 32, 32),  # bench_ppo.py --batch 32 --mini-batch 32
    "long": (1000, 256, 688, 4, 4, 2, 8, 32, 128, 8),  # bench_ppo.py --response 128
    "h1024": (1000, 1024, 2752, 4, 16, 8, 8, 32, 32, 8),  # bench_ppo.py --hidden 1024 ... (Scaling table)
    "wide6": (8000, 768, 2064, 6, 12, 4, 8, 64, 64, 8),  # the larger shape at half its batch
    "large": (8000, 768, 2064, 6, 12, 4, 16, 64, 64, 16),  # issue 18's larger shape (~15 GB; not by default)
}
FIELDS = ("vocab", "hidden", "intermediate", "layers", "heads", "kv_heads", "batch", "prompt", "response",
          "mini_batch")  # fmt: skip


def configs(shape):
    """(LlamaConfig, PPOConfig) of a shape tuple, as bench_ppo.py builds them."""
    from mindrlhf.configs.ppo_config import PPOConfig
    from mindrlhf.models.llama.config import LlamaConfig

    s = dict(zip(FIELDS, shape))
    model = LlamaConfig(
        seq_length=s["prompt"] + s["response"], hidden_size=s["hidden"], intermediate_size=s["intermediate"],
        num_layers=s["layers"], num_heads=s["heads"], n_kv_heads=s["kv_heads"], vocab_size=s["vocab"],
    )  # fmt: skip
    ppo = PPOConfig(
        rollout_batch_size=s["batch"], mini_batch_size=s["mini_batch"], ppo_epochs=1, num_iterations=2,
        max_prompt_length=s["prompt"], max_new_tokens=s["response"], seq_length=s["prompt"] + s["response"],
        ptx_coef=0.0, entropy_coef=0.0, actor_lr=1e-6, critic_lr=1e-6, warmup_steps=0,
    )  # fmt: skip
    return model, ppo


class RssSampler(threading.Thread):
    """Peak RSS per named phase, read from /proc/self/statm every `interval` seconds."""

    def __init__(self, interval: float = 0.002):
        super().__init__(daemon=True)
        self.interval, self.phase, self.peaks, self.running = interval, "start", {}, True

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE

    def run(self):
        while self.running:
            self.sample()
            time.sleep(self.interval)

    def sample(self):
        value = self.rss()
        if value > self.peaks.get(self.phase, 0):
            self.peaks[self.phase] = value

    def enter(self, phase: str) -> None:
        self.sample()  # close the previous phase with a reading
        self.phase = phase
        self.sample()


def child(name: str, shape, iterations: int) -> dict:
    sampler = RssSampler()
    sampler.start()
    import mindspore as ms
    from mindspore import Tensor

    from mindrlhf.models.llama import LlamaForCausalLM
    from mindrlhf.models.roles import ValueModel, freeze
    from mindrlhf.trainer.ppo_trainer import PPOTrainer

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.device_context.cpu.op_tuning.threads_num(2)
    ms.set_seed(0)
    model, ppo = configs(shape)
    sampler.enter("baseline")
    baseline = sampler.rss()
    sampler.enter("build")
    actor, reference = LlamaForCausalLM(model), LlamaForCausalLM(model)
    for (_, a), (_, r) in zip(actor.parameters_and_names(), reference.parameters_and_names()):
        r.set_data(Tensor(a.asnumpy()))
    reward, critic = ValueModel(model), ValueModel(model)
    b, p, n = ppo.rollout_batch_size, ppo.max_prompt_length, ppo.max_new_tokens

    class Prompts:
        def batch(self, i):
            ids = np.random.default_rng(1000 + i).integers(3, model.vocab_size, (b, p)).astype(np.int32)
            zeros = np.zeros((b, p + n), np.int32)
            return {"prompt_ids": ids, "prompt_mask": np.ones_like(ids), "pretrain_ids": zeros,
                    "pretrain_mask": zeros.copy(), "loss_mask": zeros.astype(np.float32)}  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        trainer = PPOTrainer(
            ppo, actor, critic, freeze(reference), freeze(reward), Prompts(), eos_token_id=None, pad_token_id=0,
            save_dir=tmp,
        )  # fmt: skip
        for i in range(iterations):
            sampler.enter(f"generate {i}")
            batch = trainer.dataset.batch(i)
            seqs = trainer._generate(batch)  # 1. generate (the trainer's own call)
            sampler.enter(f"score {i}")
            trainer._generate = lambda _batch, seqs=seqs: seqs  # make_experience reuses the rollout above
            exp = trainer.make_experience(batch)  # 2-3. score, advantages
            del trainer._generate
            sampler.enter(f"train {i}")
            trainer.train_step(exp)
            trainer.iteration += 1
        sampler.enter("end")
    sampler.running = False
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "shape": name,
        "baseline": baseline,
        "peak": max(peak, *sampler.peaks.values()),
        "phases": sampler.peaks,
    }


def run_child(name: str, iterations: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONPATH=ROOT)
    argv = [sys.executable, os.path.abspath(__file__), "--child", name, "--iterations", str(iterations)]
    proc = subprocess.run(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"shape {name} failed (exit {proc.returncode})")
    return json.loads(lines[-1])


def plan_of(name: str):
    from mindrlhf.tools.plan_memory import plan_memory

    model, ppo = configs(SHAPES[name])
    return plan_memory(model, ppo, reward=model)


def calibrate(measured, names):
    """(a bytes per layer, k) solving peak - baseline - plan = a x layers + k x sum of phases at two shapes."""
    lhs, rhs = [], []
    for name in names:
        plan, m = plan_of(name), measured[name]
        lhs.append([SHAPES[name][3], sum(plan.phases.values())])
        rhs.append(m["peak"] - m["baseline"] - plan.resident - plan.phases[plan.largest_phase])
    a, k = np.linalg.solve(np.array(lhs, dtype=float), np.array(rhs, dtype=float))
    return float(a), float(k)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=["mid", "batch32", "long", "h1024"])
    ap.add_argument("--calibrate", nargs=2, choices=list(SHAPES), default=["tiny", "default"],
                    help="the two shapes that measure a and k")  # fmt: skip
    ap.add_argument("--iterations", type=int, default=2)
    ap.add_argument("--smoke", action="store_true", help="the tiny shape only, one iteration")
    ap.add_argument("--save", help="also write each shape's measurement to this JSON file")
    ap.add_argument(
        "--load", help="reuse the measurements in this JSON file (shapes missing from it are run)"
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, SHAPES[args.child], args.iterations)), flush=True)
        return 0
    shapes = ["tiny"] if args.smoke else list(dict.fromkeys([*args.calibrate, *args.shapes]))
    iterations = 1 if args.smoke else args.iterations
    measured = json.load(open(args.load)) if args.load else {}
    for name in shapes:
        t0 = time.perf_counter()
        if name not in measured:
            measured[name] = run_child(name, iterations)
            if args.save:
                with open(args.save, "w") as f:
                    json.dump(measured, f, indent=1)
        phases = ", ".join(f"{k} {v / MB:.0f}" for k, v in measured[name]["phases"].items())
        print(f"{name}: {time.perf_counter() - t0:.0f} s; peak RSS per phase (MB): {phases}", flush=True)
    if args.smoke:
        return 0
    a, k = calibrate(measured, args.calibrate)
    print(f"\ngraph workspace: a = {a / MB:.0f} MB per layer, k = {k:.2f} x the sum of the plan's phases "
          f"(measured at {' and '.join(args.calibrate)})")  # fmt: skip
    print(
        f"{'shape':<8} {'plan':>8} {'baseline':>9} {'workspace':>10} {'estimate':>9} {'measured':>9} {'ratio':>6}   (MB)"
    )
    rows = []
    for name in shapes:
        plan, m, layers = plan_of(name), measured[name], SHAPES[name][3]
        largest = plan.phases[plan.largest_phase]
        model_bytes, workspace = plan.resident + largest, a * layers + k * sum(plan.phases.values())
        estimate = model_bytes + m["baseline"] + workspace
        ratio = estimate / m["peak"]
        note = "  (calibration)" if name in args.calibrate else ("" if abs(ratio - 1) <= 0.25 else "  MISSED")
        print(f"{name:<8} {model_bytes / MB:8.0f} {m['baseline'] / MB:9.0f} {workspace / MB:10.0f} "
              f"{estimate / MB:9.0f} {m['peak'] / MB:9.0f} {ratio:6.2f}{note}")  # fmt: skip
        rows.append({"shape": name, "plan_mb": round(model_bytes / MB, 1), "baseline_mb": round(m["baseline"] / MB, 1),
                     "workspace_mb": round(workspace / MB, 1), "estimate_mb": round(estimate / MB, 1),
                     "measured_mb": round(m["peak"] / MB, 1), "ratio": round(ratio, 3)})  # fmt: skip
    print(json.dumps({"calibrate": args.calibrate, "workspace_mb_per_layer": round(a / MB, 1),
                      "workspace_factor": round(k, 3), "shapes": rows}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
