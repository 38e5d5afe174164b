"""One PPO iteration, ours (MindSpore, GRAPH_MODE) against TRL's classic `PPOTrainer` (torch, CPU), same shape.

    python bench/bench_ppo.py --setup-trl    # once: bench/.venv-trl with torch 2.13, transformers<4.58, trl 0.23.1
    python bench/bench_ppo.py                # ours, TRL as shipped, TRL without its gc.collect() calls
    python bench/bench_ppo.py --skip-trl --batch 16 --response 64 --hidden 512   # the scaling points
    python bench/bench_ppo.py --smoke        # our side only, tiny model, one iteration (tests/test_bench_smoke.py)
    python bench/bench_ppo.py --skip-trl --profile prof   # + MindSpore's profiler: kernels and kernel time per op type
    python bench/bench_ppo.py --preset large --threads 1  # the issue-18 shape (H768, 6 layers, V8000, 16 x 64+64)
    python bench/bench_ppo.py --skip-trl --variant recompute="--recompute full"   # A/B of our side in one run
    python bench/bench_ppo.py --skip-trl --baseline-root /tmp/base   # A/B against another checkout's mindrlhf

Shape (default): random Llama, vocab 1000, hidden 256, intermediate 688, 4 layers, 4 heads, 2 KV heads; a rollout
of B=8 prompts x 32 tokens (no padding), exactly N=32 sampled tokens (temperature 1, no top-k/top-p, no EOS
stop), one PPO epoch of one mini-batch of 8, fp32, 2 threads for both frameworks.
  ours: `PPOTrainer.make_experience` + `PPOTrainer.train_step` (eos_token_id=None: generate never stops early;
        ptx_coef = entropy_coef = 0, so the actor loss is the clipped surrogate only, as in TRL).
  TRL:  `trl.PPOTrainer.train()` (stop_token_id=None, missing_eos_penalty=None, response_length=N, bf16=False,
        use_cpu=True); reward and value models are LlamaForSequenceClassification(num_labels=1).
Both sides use the rollout log-probs from generation (no extra policy forward) and run the same forwards:
scoring = reference + reward + critic (value) forwards over [B, P+N]; training = policy + value forward/backward
and one AdamW step each (TRL: one optimiser over both; ours: two jitted train steps).
Each side runs in its own subprocess (peak RSS = that process's ru_maxrss, model building included), first
`--warmup` iterations excluded (compile / allocator warm-up), median of `--iters` timed iterations.
TRL phases come from wrapping `batch_generation`, `forward` and `gc.collect` inside `trl.trainer.ppo_trainer`:
generate = batch_generation; train = first grad-enabled forward to the end of the iteration; score = the rest
(ref/reward/value forwards, rollout log-probs, GAE); gc = the two gc.collect() calls (in the "as shipped" run;
the "no gc" run replaces them with no-ops).
Memory per phase (ours): the kernel's peak-RSS mark (VmHWM) is reset at the start of generation, scoring and
training (`/proc/self/clear_refs`), so `<phase>_peak_mb` is the highest RSS inside that phase (median over the timed
iterations; `first_<phase>_peak_mb` is the first iteration's, compiles included) and `models_rss_mb` the RSS once
the four models and the trainer are built.
The last line printed is one JSON object (ours_sec_per_iter, trl_sec_per_iter, trl_nogc_sec_per_iter, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from _common import (  # shared with bench_dpo/grpo
    ROOT,
    TRL_VENV,
    count_compiles,
    peak_rss_mb,
    side_argv,
    summarise,
)

TRL_REQUIREMENTS = ["torch==2.13.0", "transformers>=4.56.1,<4.58", "trl==0.23.1"]

DEFAULT = dict(
    vocab=1000,
    hidden=256,
    intermediate=688,
    layers=4,
    heads=4,
    kv_heads=2,
    batch=8,
    prompt=32,
    response=32,
    mini_batch=8,
)
LARGE = dict(  # issue 18: "a shape closer to real use"; intermediate = 688 * 768 / 256
    vocab=8000,
    hidden=768,
    intermediate=2064,
    layers=6,
    heads=12,
    kv_heads=4,
    batch=16,
    prompt=64,
    response=64,
    mini_batch=16,
)
PRESETS = {"tiny": DEFAULT, "large": LARGE}
SMOKE = dict(
    vocab=64,
    hidden=32,
    intermediate=48,
    layers=2,
    heads=4,
    kv_heads=2,
    batch=4,
    prompt=8,
    response=6,
    mini_batch=4,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny model, our side only, 1 iteration, no warm-up")
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="tiny",
        help="shape preset (tiny: the defaults below; large: hidden 768, 6 layers, 12/4 heads, vocab 8000, "
        "batch 16, prompt 64, response 64, mini-batch 16); explicit shape flags override it",
    )
    for name, value in DEFAULT.items():
        p.add_argument(
            f"--{name.replace('_', '-')}", dest=name, type=int, default=None, help=f"default {value}"
        )
    p.add_argument("--iters", type=int, default=None, help="timed iterations per side (default 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed first iterations (default 1)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for MindSpore and torch (default 2)")
    p.add_argument("--skip-trl", action="store_true", help="our side only")
    p.add_argument(
        "--recompute",
        choices=["off", "full", "select"],
        default="off",
        help="our side: MindFormers recompute_config for the actor and critic (full: recompute: True; "
        "select: select_recompute: True)",
    )
    p.add_argument(
        "--memory-level",
        choices=["O0", "O1"],
        help="our side: mindspore.runtime.set_memory(optimize_level=...)",
    )
    p.add_argument(
        "--jit-level", choices=["O0", "O1"], help="our side: set_context(jit_config={'jit_level': ...})"
    )
    p.add_argument("--compile-cache", metavar="DIR", help="our side: MindSpore's compile cache in DIR")
    p.add_argument(
        "--trim",
        action="store_true",
        help="our side: glibc malloc_trim(0) after each phase (returns freed heap)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="environment of the side's process (e.g. MALLOC_ARENA_MAX=2 in a --variant)",
    )
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=FLAGS",
        help='also run our side with these extra flags (e.g. recompute="--recompute full"), in the same run; '
        "repeatable",
    )
    p.add_argument(
        "--baseline-root",
        metavar="DIR",
        help="also run our side importing mindrlhf from DIR (e.g. `git archive <commit> | tar -x -C DIR`): "
        "an A/B of a code change in one run",
    )
    p.add_argument(
        "--profile",
        metavar="DIR",
        help="run MindSpore's profiler over our timed iterations (output in DIR) and print the kernel summary; "
        "profiled timings are slower, do not quote them",
    )
    p.add_argument("--skip-trl-nogc", action="store_true", help="skip the TRL run without gc.collect()")
    p.add_argument(
        "--trl-python", default=os.path.join(TRL_VENV, "bin", "python"), help="python of the TRL env"
    )
    p.add_argument(
        "--setup-trl", action="store_true", help=f"create {TRL_VENV} ({', '.join(TRL_REQUIREMENTS)})"
    )
    p.add_argument("--side", choices=["ours", "trl", "trl-nogc"], help=argparse.SUPPRESS)  # child process
    args = p.parse_args(argv)
    shape = SMOKE if args.smoke else PRESETS[args.preset]
    for name, value in shape.items():
        if getattr(args, name) is None and name != "intermediate":
            setattr(args, name, value)
    if args.intermediate is None:  # 688 at hidden 256 (Llama's ~8H/3), scaled with the width
        args.intermediate = shape["intermediate"] * args.hidden // shape["hidden"]
    args.iters = args.iters or (1 if args.smoke else 5)
    args.warmup = (0 if args.smoke else 1) if args.warmup is None else args.warmup
    if args.smoke:
        args.skip_trl = True
    return args


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS mark (VmHWM) to its current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PhaseMemory:
    """Per-phase memory: `wrap(name, fn)` records, for each call, the RSS at its start and its peak RSS
    (VmHWM reset at the start, read at the end) into `self.last[name + "_start_mb" / "_peak_mb"]`."""

    def __init__(self, trim: bool = False):
        self.last = {}
        self.exact = reset_peak_rss()  # else the peaks are the process's running maximum (ru_maxrss)
        self.trim = None
        if trim:
            import ctypes

            self.trim = ctypes.CDLL("libc.so.6").malloc_trim

    def wrap(self, name, fn):
        def wrapper(*a, **k):
            reset_peak_rss()
            self.last[f"{name}_start_mb"] = _status_mb("VmRSS")
            out = fn(*a, **k)
            self.last[f"{name}_peak_mb"] = _status_mb("VmHWM")
            if self.trim is not None:
                self.trim(0)
            return out

        return wrapper


def prompts(args, i: int) -> np.ndarray:
    """Rollout i's prompts `[B, P]`: random ids in [3, vocab) (no pad/BOS/EOS), the same for both sides."""
    return np.random.default_rng(1000 + i).integers(3, args.vocab, (args.batch, args.prompt)).astype(np.int32)


# ---------------------------------------------------------------------------------------------------- ours
def run_ours(args) -> dict:
    import mindspore as ms
    from mindspore import Tensor

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.device_context.cpu.op_tuning.threads_num(args.threads)
    if args.memory_level:
        ms.runtime.set_memory(optimize_level=args.memory_level)
    if args.jit_level:
        ms.set_context(jit_config={"jit_level": args.jit_level})
    if args.compile_cache:
        from mindrlhf.utils.compile_cache import enable_compile_cache

        options = ("threads", "iters", "warmup", "recompute", "memory_level", "jit_level")
        key = {k: getattr(args, k) for k in (*DEFAULT, *options)}
        print(f"  compile cache {enable_compile_cache(args.compile_cache, key)}", flush=True)
    compiles = count_compiles()

    from mindrlhf.configs.ppo_config import PPOConfig
    from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM
    from mindrlhf.models.roles import ValueModel, freeze
    from mindrlhf.trainer.ppo_trainer import PPOTrainer

    b, p, n = args.batch, args.prompt, args.response
    ms.set_seed(0)
    config = LlamaConfig(
        seq_length=p + n,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_layers=args.layers,
        num_heads=args.heads,
        n_kv_heads=args.kv_heads,
        vocab_size=args.vocab,
    )
    if args.recompute != "off":  # MindFormers' recompute_config; the frozen roles run no backward
        from mindrlhf.models.llama.recompute import RecomputeConfig

        config.recompute_config = RecomputeConfig(
            recompute=args.recompute == "full", select_recompute=args.recompute == "select"
        )
    actor, reference = LlamaForCausalLM(config), LlamaForCausalLM(config)
    for (_, a), (_, r) in zip(actor.parameters_and_names(), reference.parameters_and_names()):
        r.set_data(Tensor(a.asnumpy()))
    reward, critic = ValueModel(config), ValueModel(config)
    reward.v_head.weight.set_data(
        Tensor(np.random.RandomState(1).normal(0, 0.02, (1, args.hidden)).astype(np.float32))
    )
    for (_, r), (_, c) in zip(reward.parameters_and_names(), critic.parameters_and_names()):
        c.set_data(Tensor(r.asnumpy()))
    iterations = args.warmup + args.iters

    class Prompts:
        def batch(self, i):
            ids = prompts(args, i)
            seq = p + n
            pre = np.zeros((b, seq), np.int32)
            return {
                "prompt_ids": ids,
                "prompt_mask": np.ones_like(ids),
                "pretrain_ids": pre,
                "pretrain_mask": pre.copy(),
                "loss_mask": pre.astype(np.float32),
            }

    with tempfile.TemporaryDirectory() as tmp:
        ppo = PPOConfig(
            rollout_batch_size=b,
            mini_batch_size=args.mini_batch,
            ppo_epochs=1,
            num_iterations=iterations,
            max_prompt_length=p,
            max_new_tokens=n,
            seq_length=p + n,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            ptx_coef=0.0,
            entropy_coef=0.0,
            actor_lr=1e-6,
            critic_lr=1e-6,
        )
        trainer = PPOTrainer(
            ppo,
            actor,
            critic,
            freeze(reference),
            freeze(reward),
            Prompts(),
            eos_token_id=None,
            pad_token_id=0,
            save_dir=tmp,
        )
        memory = PhaseMemory(trim=args.trim)
        trainer._generate = memory.wrap("generate", trainer._generate)
        trainer._score = memory.wrap("score", trainer._score)
        train_step = memory.wrap("train", trainer.train_step)
        models_rss = _status_mb("VmRSS")
        rows = []
        profiler = None
        for i in range(iterations):
            if args.profile and i == args.warmup:
                profiler = ms.Profiler(output_path=args.profile)
            start = time.perf_counter()
            exp = trainer.make_experience(trainer.dataset.batch(i))
            t_exp = time.perf_counter()
            metrics = train_step(exp)
            end = time.perf_counter()
            trainer.iteration += 1
            assert exp.response_mask.sum() == b * n, "a response stopped early: EOS must be off"
            rows.append(
                {
                    "total": end - start,
                    "generate": trainer.timings["generate"],
                    "score": trainer.timings["score"],
                    "advantages": trainer.timings["advantages"],
                    "train": end - t_exp,
                    "compiled_graphs": len(compiles),
                    **{k: v for k, v in memory.last.items() if k.endswith("_peak_mb")},
                }
            )
            print(
                f"  ours iteration {i}: "
                + ", ".join(
                    f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()
                ),
                flush=True,
            )
        assert all(np.isfinite(v) for v in metrics.values())
        # Same seed, same graphs -> the same numbers: compares a warm compile cache (or any A/B) with the cold run.
        checksum = float(sum(v for k, v in sorted(metrics.items()) if not k.startswith("time/")))
    # ru_maxrss follows VmHWM, which the phase records reset: the process peak is the highest phase peak.
    peak = max([peak_rss_mb(), models_rss] + [r[f"{p}_peak_mb"] for r in rows for p in PHASES])
    result = summarise(rows, args.warmup, peak)
    result["models_rss_mb"] = models_rss
    result["end_rss_mb"] = _status_mb("VmRSS")  # what stays allocated between iterations
    result["metrics_checksum"] = checksum
    result["phase_peaks_exact"] = memory.exact
    for phase in ("generate", "score", "train"):
        result[f"first_{phase}_peak_mb"] = rows[0][f"{phase}_peak_mb"]
    if profiler is not None:
        profiler.stop()
        profiler.analyse()
        result.update(kernel_summary(args.profile, iterations - args.warmup))
    return result


def kernel_summary(profile_dir: str, iterations: int, top: int = 12) -> dict:
    """Print the kernels per iteration and the `top` op types by kernel time from the profiler's CSV."""
    import csv
    import glob

    found = sorted(glob.glob(os.path.join(profile_dir, "*", "FRAMEWORK", "cpu_op_type_info_*.csv")))
    if not found:
        raise RuntimeError(f"the profiler wrote no cpu_op_type_info CSV under {profile_dir}")
    with open(found[-1], newline="") as f:
        rows = [
            (r["op_type"], int(r["type_occurrences"]), float(r["total_compute_time"]))
            for r in csv.DictReader(f)
        ]
    rows.sort(key=lambda r: -r[2])
    kernels = sum(r[1] for r in rows) / iterations
    kernel_ms = sum(r[2] for r in rows) / iterations
    print(f"  profile ({found[-1]}): {kernels:.0f} kernels, {kernel_ms:.1f} ms of kernel time per iteration")
    for op, count, ms_total in rows[:top]:
        print(f"    {op:<24} {count / iterations:8.1f} per iteration {ms_total / iterations:9.2f} ms")
    return {"kernels_per_iter": round(kernels, 1), "kernel_sec_per_iter": round(kernel_ms / 1000, 4)}


# ---------------------------------------------------------------------------------------------------- TRL
def run_trl(args, keep_gc: bool) -> dict:
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from trl.trainer import ppo_trainer as trl_ppo

    torch.set_num_threads(args.threads)
    b, p, n = args.batch, args.prompt, args.response
    cfg = dict(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(128, p + n),
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    policy = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))
    reference.load_state_dict(policy.state_dict())
    reward = transformers.LlamaForSequenceClassification(transformers.LlamaConfig(**cfg, num_labels=1))
    value = transformers.LlamaForSequenceClassification(transformers.LlamaConfig(**cfg, num_labels=1))
    value.load_state_dict(reward.state_dict())
    policy.generation_config.pad_token_id = 0

    vocab = {f"t{i}": i for i in range(args.vocab)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="t0", bos_token="t1", eos_token="t2", unk_token="t3"
    )
    iterations = args.warmup + args.iters
    data = Dataset.from_dict(
        {"input_ids": [row.tolist() for i in range(iterations) for row in prompts(args, i)]}
    )

    # Phase timing: wrap the module-level functions the loop calls.
    events = []  # (name, start, end)

    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            out = fn(*a, **k)
            events.append((name, t0, time.perf_counter()))
            return out

        return wrapper

    trl_ppo.batch_generation = timed("generate", trl_ppo.batch_generation)
    real_forward = trl_ppo.forward

    def forward(*a, **k):
        t0 = time.perf_counter()
        out = real_forward(*a, **k)
        events.append(
            ("train_forward" if torch.is_grad_enabled() else "score_forward", t0, time.perf_counter())
        )
        return out

    trl_ppo.forward = forward

    class GC:
        @staticmethod
        def collect(*a):
            t0 = time.perf_counter()
            if keep_gc:
                import gc

                gc.collect(*a)
            events.append(("gc", t0, time.perf_counter()))

    trl_ppo.gc = GC

    with tempfile.TemporaryDirectory() as tmp:
        config = trl.PPOConfig(
            output_dir=tmp,
            per_device_train_batch_size=b,
            gradient_accumulation_steps=1,
            num_mini_batches=b // args.mini_batch,
            local_rollout_forward_batch_size=b,
            num_ppo_epochs=1,
            response_length=n,
            stop_token=None,
            stop_token_id=None,
            missing_eos_penalty=None,
            temperature=1.0,
            total_episodes=b * iterations,
            num_sample_generations=0,
            report_to="none",
            save_strategy="no",
            use_cpu=True,
            bf16=False,
            fp16=False,
            seed=0,
            learning_rate=1e-6,
            disable_tqdm=True,
            logging_steps=10_000,
            dataloader_num_workers=0,
        )
        trainer = trl.PPOTrainer(
            args=config,
            processing_class=tokenizer,
            model=policy,
            ref_model=reference,
            reward_model=reward,
            value_model=value,
            train_dataset=data,
            eval_dataset=data,
        )
        trainer.log = lambda *a, **k: None  # no per-step metric printing
        trainer.train()
        end_of_training = time.perf_counter()

    starts = [t0 for name, t0, _ in events if name == "generate"] + [end_of_training]
    rows = []
    for i in range(iterations):
        lo, hi = starts[i], starts[i + 1]
        ev = [e for e in events if lo <= e[1] < hi]
        gen_end = next(e[2] for e in ev if e[0] == "generate")
        train_start = next(e[1] for e in ev if e[0] == "train_forward")
        gc_before = sum(e[2] - e[1] for e in ev if e[0] == "gc" and e[1] < train_start)
        gc_after = sum(e[2] - e[1] for e in ev if e[0] == "gc" and e[1] >= train_start)
        rows.append(
            {
                "total": hi - lo,
                "generate": gen_end - lo,
                "score": train_start - gen_end - gc_before,
                "train": hi - train_start - gc_after,
                "gc": gc_before + gc_after,
            }
        )
        print(
            f"  trl{'' if keep_gc else '-nogc'} iteration {i}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1].items()),
            flush=True,
        )
    assert len([e for e in events if e[0] == "gc"]) == 2 * iterations, (
        "expected two gc.collect() per iteration"
    )
    out = summarise(rows, args.warmup, peak_rss_mb())
    out["versions"] = {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
    }
    return out


# ---------------------------------------------------------------------------------------------------- driver


def run_side(args, side: str, python: str, extra=(), root: str = ROOT) -> dict:
    """Run one side in its own process (`extra`: more flags for it; `root`: where it imports mindrlhf from)."""
    argv = [python, os.path.abspath(__file__), *side_argv(side, args, DEFAULT)]
    if args.smoke:
        argv.append("--smoke")
    if args.profile and side == "ours":
        argv += ["--profile", os.path.abspath(args.profile)]
    if side == "ours":
        argv += ["--recompute", getattr(args, "recompute", "off")]
        if getattr(args, "memory_level", None):
            argv += ["--memory-level", args.memory_level]
        if getattr(args, "jit_level", None):
            argv += ["--jit-level", args.jit_level]
        if getattr(args, "compile_cache", None):
            argv += ["--compile-cache", os.path.abspath(args.compile_cache)]
    if getattr(args, "trim", False) and side == "ours":
        argv.append("--trim")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), PYTHONPATH=root, TOKENIZERS_PARALLELISM="false")
    extra, pairs = list(extra), list(getattr(args, "env", []))
    while (
        "--env" in extra
    ):  # a variant's --env KEY=VALUE sets the child's environment (read at process start)
        i = extra.index("--env")
        pairs.append(extra[i + 1])
        del extra[i : i + 2]
    env.update(pair.split("=", 1) for pair in pairs)
    argv += extra
    proc = subprocess.run(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    lines = proc.stdout.strip().splitlines()
    for line in lines[:-1]:
        print(line, flush=True)
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{side} side failed (exit {proc.returncode}); see its output above")
    print(f"  {side} done: {lines[-1]}", flush=True)  # each side's figures as soon as it ends
    return json.loads(lines[-1])


def setup_trl() -> None:
    if not os.path.exists(os.path.join(TRL_VENV, "bin", "python")):
        subprocess.run([sys.executable, "-m", "venv", TRL_VENV], check=True)
    subprocess.run([os.path.join(TRL_VENV, "bin", "pip"), "install", *TRL_REQUIREMENTS], check=True)


def parse_variants(specs):
    """`["recompute=--recompute full", ...]` -> `[("recompute", ["--recompute", "full"]), ...]`."""
    import shlex

    out = []
    for spec in specs:
        label, sep, flags = spec.partition("=")
        if not sep or not label:
            raise SystemExit(f"--variant {spec!r}: expected LABEL=FLAGS, e.g. recompute='--recompute full'")
        out.append((label, shlex.split(flags)))
    return out


PHASES = ("generate", "score", "train")


def print_phase_memory(results) -> None:
    ours = {k: r for k, r in results.items() if k.startswith("ours")}
    print("\nour side's memory (MB): RSS once the models are built; peak RSS inside each phase, steady state")
    print("(median of the timed iterations) and [first iteration, compiles included]")
    print(
        f"{'side':<20} {'models':>7} " + " ".join(f"{p:>17}" for p in PHASES) + f" {'end':>7} {'process':>8}"
    )
    for name, r in ours.items():
        cells = " ".join(f"{r[p + '_peak_mb']:7.0f} [{r['first_' + p + '_peak_mb']:7.0f}]" for p in PHASES)
        print(
            f"{name:<20} {r['models_rss_mb']:7.0f} {cells} {r.get('end_rss_mb', 0):7.0f} {r['peak_rss_mb']:8.0f}"
        )


def phase_summary(results) -> dict:
    """Per-phase seconds and peak RSS of our side and of each A/B variant, for the JSON line."""
    out = {}
    for name, r in results.items():
        if not name.startswith("ours"):
            continue
        entry = {
            "models_rss_mb": round(r["models_rss_mb"], 1),
            "end_rss_mb": round(r.get("end_rss_mb", 0), 1),
        }
        entry["metrics_checksum"] = r.get("metrics_checksum")
        for p in PHASES:
            entry[f"{p}_peak_mb"] = round(r[f"{p}_peak_mb"], 1)
            entry[f"first_{p}_peak_mb"] = round(r[f"first_{p}_peak_mb"], 1)
        if name == "ours":
            out["ours_memory"] = entry
            continue
        entry.update(
            sec_per_iter=round(r["total"], 4),
            **{f"{p}_sec": round(r[p], 4) for p in PHASES},
            peak_rss_mb=round(r["peak_rss_mb"], 1),
            first_iter_sec=round(r["first_iter"], 2),
            compiled_graphs=r["compiled_graphs"],
        )
        out.setdefault("variants", {})[name[5:-1]] = entry
    return out


def fmt_row(name, r):
    gc = f"{r['gc']:7.3f}" if "gc" in r else "      -"
    return (
        f"{name:<20} {r['total']:8.3f} {r['generate']:8.3f} {r['score']:8.3f} {r['train']:8.3f} {gc} "
        f"{r['first_iter']:9.2f} {r['peak_rss_mb']:9.0f}"
    )


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.side == "ours":
        print(json.dumps(run_ours(args)))
        return 0
    if args.side in ("trl", "trl-nogc"):
        print(json.dumps(run_trl(args, keep_gc=args.side == "trl")))
        return 0
    if args.setup_trl:
        setup_trl()
        return 0
    print(
        f"shape: vocab {args.vocab}, hidden {args.hidden}, intermediate {args.intermediate}, {args.layers} layers, "
        f"{args.heads} heads ({args.kv_heads} kv); {args.batch} prompts x {args.prompt} tokens, {args.response} "
        f"sampled tokens, mini-batch {args.mini_batch}, 1 PPO epoch, fp32, {args.threads} threads; "
        f"{args.warmup} warm-up + {args.iters} timed iterations; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    results = {"ours": run_side(args, "ours", sys.executable)}
    if not args.skip_trl:
        if not os.path.exists(args.trl_python):
            print(
                f"TRL side skipped: {args.trl_python} not found (run `python bench/bench_ppo.py --setup-trl`)"
            )
        else:
            results["trl"] = run_side(args, "trl", args.trl_python)
            if not args.skip_trl_nogc:
                results["trl_nogc"] = run_side(args, "trl-nogc", args.trl_python)
    # after TRL: a long A/B list cannot starve the TRL runs
    for label, flags in parse_variants(args.variant):
        results[f"ours[{label}]"] = run_side(args, "ours", sys.executable, extra=flags)
    if args.baseline_root:
        results["ours[baseline]"] = run_side(
            args, "ours", sys.executable, root=os.path.abspath(args.baseline_root)
        )
    print("\nmedian seconds per iteration (first iteration and peak RSS of each side's process)")
    print(
        f"{'side':<20} {'total':>8} {'generate':>8} {'score':>8} {'train':>8} {'gc':>7} {'first_it':>9} {'rss_mb':>9}"
    )
    for name, r in results.items():
        print(fmt_row(name, r))
    print_phase_memory(results)
    ours = results["ours"]
    summary = {
        "ours_sec_per_iter": round(ours["total"], 4),
        "ours_generate_sec": round(ours["generate"], 4),
        "ours_score_sec": round(ours["score"], 4),
        "ours_train_sec": round(ours["train"], 4),
        "ours_peak_rss_mb": round(ours["peak_rss_mb"], 1),
        "ours_compiled_graphs_after_warmup": ours["compiled_graphs"],
        "ours_first_iter_sec": round(ours["first_iter"], 2),
    }
    if "kernels_per_iter" in ours:  # --profile
        summary["ours_kernels_per_iter"] = ours["kernels_per_iter"]
        summary["ours_kernel_sec_per_iter"] = ours["kernel_sec_per_iter"]
    if "trl" in results:
        trl = results["trl"]
        summary.update(
            {
                "trl_sec_per_iter": round(trl["total"], 4),
                "trl_generate_sec": round(trl["generate"], 4),
                "trl_score_sec": round(trl["score"], 4),
                "trl_train_sec": round(trl["train"], 4),
                "trl_gc_sec": round(trl["gc"], 4),
                "trl_peak_rss_mb": round(trl["peak_rss_mb"], 1),
                "speedup_vs_trl": round(trl["total"] / ours["total"], 2),
                "rss_ratio_ours_over_trl": round(ours["peak_rss_mb"] / trl["peak_rss_mb"], 3),
                "trl_versions": trl["versions"],
            }
        )
    if "trl_nogc" in results:
        summary["trl_nogc_sec_per_iter"] = round(results["trl_nogc"]["total"], 4)
        summary["trl_nogc_peak_rss_mb"] = round(results["trl_nogc"]["peak_rss_mb"], 1)
        summary["speedup_vs_trl_nogc"] = round(results["trl_nogc"]["total"] / ours["total"], 2)
    summary.update(phase_summary(results))
    summary.update(
        shape={k: getattr(args, k) for k in DEFAULT},
        threads=args.threads,
        iters=args.iters,
        warmup=args.warmup,
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
