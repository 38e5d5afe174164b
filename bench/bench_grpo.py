"""One GRPO iteration, ours (MindSpore, GRAPH_MODE) against TRL 0.23.1's `GRPOTrainer` (torch, CPU), same shape;
and our PPO iteration on the same number of responses (the "no critic is cheaper" check).

    python bench/bench_ppo.py --setup-trl    # once: bench/.venv-trl (torch 2.13, transformers<4.58, trl 0.23.1)
    python bench/bench_grpo.py               # ours GRPO, TRL GRPO, ours PPO
    python bench/bench_grpo.py --skip-trl --skip-ppo
    python bench/bench_grpo.py --smoke       # our GRPO only, tiny model, one iteration (tests/test_bench_smoke.py)

Shape (default): bench_ppo's random Llama (vocab 1000, hidden 256, intermediate 688, 4 layers, 4 heads, 2 KV
heads); 8 prompts x 32 tokens (no padding), G = 4 samples each (32 responses) of exactly 32 tokens (temperature 1,
no top-k/top-p, EOS never stops a response), beta 0.04 (a reference model, k3 KL in the loss), loss token_mean,
one optimiser step per generation (mini-batch = the 32 responses), fp32, 1 thread per side (`--threads`: MindSpore's
CPU op threads on ours, torch.set_num_threads and OMP_NUM_THREADS on TRL's).
  reward: a Python function on the decoded responses on both sides (fraction of even token ids), no reward model.
  ours: `PPOTrainer.make_experience` + `train_step` with advantage_estimator grpo (no critic, no value graph).
  TRL:  `trl.GRPOTrainer.train()` (per_device_train_batch_size 32, num_generations 4, steps_per_generation 1,
        num_iterations 1, generation_kwargs min_new_tokens = 32, use_cpu, no bf16); iteration = one optimiser
        step, timed by a callback; generate+score = `_generate_and_score_completions`.
  ours PPO: bench_ppo's PPO side with 32 prompts x 1 response and one mini-batch of 32 (its own subprocess).
Each side runs in its own subprocess (peak RSS = that process's ru_maxrss), the first `--warmup` iterations
excluded, median of `--iters` timed iterations (bench/_common.py: the child processes and the reporting shared with
bench_ppo.py and bench_dpo.py). The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_ppo  # noqa: E402  (its shapes and prompts, and its PPO side)
from _common import (  # noqa: E402
    TRL_VENV,
    count_compiles,
    peak_rss_mb,
    print_medians,
    run_child,
    side_argv,
    side_fields,
    speedup,
    summarise,
    trl_available,
    trl_versions,
)
from bench_ppo import DEFAULT, SMOKE  # noqa: E402

GROUP = 4
BETA = 0.04
# summary-JSON name -> the side's key (bench/_common.side_fields)
TRL_FIELDS = {
    "sec_per_iter": "total",
    "generate_sec": "generate",
    "train_sec": "train",
    "peak_rss_mb": "peak_rss_mb",
}
OURS_FIELDS = {
    **TRL_FIELDS,
    "first_iter_sec": "first_iter",
    "compiled_graphs_after_warmup": "compiled_graphs",
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny model, our GRPO only, 1 iteration, no warm-up")
    p.add_argument("--prompts", type=int, default=None, help="prompts per iteration (default 8; smoke 2)")
    p.add_argument("--generations", type=int, default=GROUP, help=f"G samples per prompt (default {GROUP})")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per side (default 5)")
    p.add_argument("--warmup", type=int, default=None, help="untimed first iterations (default 1)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per side (default 1)")
    p.add_argument("--skip-trl", action="store_true", help="no TRL side")
    p.add_argument("--skip-ppo", action="store_true", help="no PPO side")
    p.add_argument(
        "--trl-python", default=os.path.join(TRL_VENV, "bin", "python"), help="python of the TRL env"
    )
    p.add_argument("--side", choices=["ours", "trl"], help=argparse.SUPPRESS)  # child process
    args = p.parse_args(argv)
    shape = SMOKE if args.smoke else DEFAULT
    for name, value in shape.items():
        setattr(args, name, value)
    args.prompts = args.prompts or (2 if args.smoke else 8)
    args.batch = args.prompts  # bench_ppo.prompts(args, i) reads args.batch prompts
    args.iters = args.iters or (1 if args.smoke else 5)
    args.warmup = (0 if args.smoke else 1) if args.warmup is None else args.warmup
    if args.smoke:
        args.skip_trl = args.skip_ppo = True
    return args


def even_fraction(ids) -> float:
    """The benchmark's reward: fraction of even token ids in a response (cheap, varies between samples)."""
    ids = list(ids)
    return sum(int(t) % 2 == 0 for t in ids) / max(len(ids), 1)


class WordTokenizer:
    """Token i <-> "t{i}", as bench_ppo's TRL tokenizer; `decode_batch` is what our reward functions need."""

    def decode_batch(self, ids, mask=None):
        rows = ids if mask is None else [row[np.asarray(m) == 1] for row, m in zip(ids, mask)]
        return [" ".join(f"t{int(t)}" for t in row) for row in rows]


def even_tokens(prompts, responses):
    """Our reward function (mindrlhf.rewards contract), the same number TRL's side computes."""
    return [even_fraction(int(w[1:]) for w in r.split()) for r in responses]


# ---------------------------------------------------------------------------------------------------- ours
def run_ours(args) -> dict:
    import mindspore as ms
    from mindspore import Tensor

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.device_context.cpu.op_tuning.threads_num(args.threads)
    compiles = count_compiles()

    from mindrlhf.configs.ppo_config import PPOConfig
    from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM
    from mindrlhf.models.roles import freeze
    from mindrlhf.trainer.ppo_trainer import PPOTrainer

    p, n, g = args.prompt, args.response, args.generations
    b = args.prompts * g
    ms.set_seed(0)
    config = LlamaConfig(
        seq_length=p + n, hidden_size=args.hidden, intermediate_size=args.intermediate, num_layers=args.layers,
        num_heads=args.heads, n_kv_heads=args.kv_heads, vocab_size=args.vocab,
    )  # fmt: skip
    actor, reference = LlamaForCausalLM(config), LlamaForCausalLM(config)
    for (_, a), (_, r) in zip(actor.parameters_and_names(), reference.parameters_and_names()):
        r.set_data(Tensor(a.asnumpy()))
    iterations = args.warmup + args.iters

    class Prompts:
        def batch(self, i):
            ids = bench_ppo.prompts(args, i)
            return {"prompt_ids": ids, "prompt_mask": np.ones_like(ids)}

    with tempfile.TemporaryDirectory() as tmp:
        grpo = PPOConfig(
            advantage_estimator="grpo", num_generations=g, beta=BETA, init_kl_coef=0.0, rollout_batch_size=b,
            mini_batch_size=b, ppo_epochs=1, num_iterations=iterations, max_prompt_length=p, max_new_tokens=n,
            seq_length=p + n, temperature=1.0, ptx_coef=0.0, entropy_coef=0.0, actor_lr=1e-6,
            reward_funcs=["bench_grpo:even_tokens"],
        )  # fmt: skip
        trainer = PPOTrainer(
            grpo, actor, None, freeze(reference), None, Prompts(), eos_token_id=None, pad_token_id=0,
            save_dir=tmp, tokenizer=WordTokenizer(),
        )  # fmt: skip
        rows = []
        for i in range(iterations):
            start = time.perf_counter()
            exp = trainer.make_experience(trainer.dataset.batch(i))
            t_exp = time.perf_counter()
            metrics = trainer.train_step(exp)
            end = time.perf_counter()
            trainer.iteration += 1
            assert exp.response_mask.sum() == b * n, "a response stopped early: EOS must be off"
            rows.append(
                {
                    "total": end - start,
                    "generate": trainer.timings["generate"],
                    "score": trainer.timings["score"] + trainer.timings["advantages"],
                    "train": end - t_exp,
                    "compiled_graphs": len(compiles),
                }
            )
            print(f"  ours-grpo iteration {i}: " + _fmt(rows[-1]), flush=True)
        assert all(np.isfinite(v) for v in metrics.values())
    return summarise(rows, args.warmup, peak_rss_mb())


def _fmt(row) -> str:
    return ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


# ---------------------------------------------------------------------------------------------------- TRL
def run_trl(args) -> dict:
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.set_num_threads(args.threads)
    p, n, g = args.prompt, args.response, args.generations
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(128, p + n), tie_word_embeddings=False, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, architectures=["LlamaForCausalLM"],
    )  # fmt: skip
    tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(args.vocab)}, unk_token="t3"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="t0", bos_token="t1", eos_token="t2", unk_token="t3",
        model_input_names=["input_ids", "attention_mask"],
    )  # fmt: skip
    iterations = args.warmup + args.iters
    texts = [" ".join(f"t{t}" for t in row) for i in range(iterations) for row in bench_ppo.prompts(args, i)]

    def reward(completions, completion_ids, **kwargs):
        return [even_fraction(ids) for ids in completion_ids]

    marks = []  # (name, start, end)

    class Steps(transformers.TrainerCallback):
        def on_step_end(self, *a, **k):
            marks.append(("step", time.perf_counter(), None))

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = os.path.join(tmp, "model")
        transformers.LlamaForCausalLM(cfg).save_pretrained(
            model_dir
        )  # TRL builds the reference from the path
        config = trl.GRPOConfig(
            output_dir=tmp, per_device_train_batch_size=args.prompts * g, gradient_accumulation_steps=1,
            num_generations=g, steps_per_generation=1, num_iterations=1, max_prompt_length=p,
            max_completion_length=n, temperature=1.0, beta=BETA, loss_type="dapo", learning_rate=1e-6,
            generation_kwargs={"min_new_tokens": n}, max_steps=iterations, report_to="none", save_strategy="no",
            use_cpu=True, bf16=False, fp16=False, seed=0, disable_tqdm=True, logging_steps=10_000,
            dataloader_num_workers=0, shuffle_dataset=False, log_completions=False,
        )  # fmt: skip
        trainer = trl.GRPOTrainer(
            model=model_dir, reward_funcs=reward, args=config, train_dataset=Dataset.from_dict({"prompt": texts}),
            processing_class=tokenizer, callbacks=[Steps()],
        )  # fmt: skip
        real = trainer._generate_and_score_completions

        def generate_and_score(*a, **k):
            t0 = time.perf_counter()
            out = real(*a, **k)
            marks.append(("generate", t0, time.perf_counter()))
            assert int(out["completion_mask"].sum()) == args.prompts * g * n, "a completion stopped early"
            return out

        trainer._generate_and_score_completions = generate_and_score
        trainer.log = lambda *a, **k: None
        start = time.perf_counter()
        trainer.train()
    gens = [m for m in marks if m[0] == "generate"]
    ends = [m[1] for m in marks if m[0] == "step"]
    rows, prev = [], start
    for i in range(iterations):
        _, g0, g1 = gens[i]
        rows.append({"total": ends[i] - prev, "generate": g1 - g0, "score": 0.0, "train": ends[i] - g1})
        prev = ends[i]
        print(f"  trl-grpo iteration {i}: " + _fmt(rows[-1]), flush=True)
    return {**summarise(rows, args.warmup, peak_rss_mb()), "versions": trl_versions()}


# ---------------------------------------------------------------------------------------------------- driver
def run_side(args, side: str, python: str) -> dict:
    argv = side_argv(side, args, ("prompts", "generations"))
    return run_child(__file__, python, argv + (["--smoke"] if args.smoke else []), args.threads)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.side == "ours":
        print(json.dumps(run_ours(args)))
        return 0
    if args.side == "trl":
        print(json.dumps(run_trl(args)))
        return 0
    b = args.prompts * args.generations
    print(
        f"shape: vocab {args.vocab}, hidden {args.hidden}, {args.layers} layers; {args.prompts} prompts x G="
        f"{args.generations} = {b} responses, {args.prompt}+{args.response} tokens, beta {BETA}, 1 update per "
        f"generation, {args.threads} threads; {args.warmup} warm-up + {args.iters} timed; load average "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )
    results = {"ours-grpo": run_side(args, "ours", sys.executable)}
    if not args.skip_trl and trl_available(args.trl_python):
        results["trl-grpo"] = run_side(args, "trl", args.trl_python)
    if not args.skip_ppo:  # bench_ppo's own PPO side, same number of responses, one mini-batch
        ppo_args = bench_ppo.parse_args(
            ["--batch", str(b), "--mini-batch", str(b), "--iters", str(args.iters), "--warmup", str(args.warmup),
             "--threads", str(args.threads)]
        )  # fmt: skip
        results["ours-ppo"] = bench_ppo.run_side(ppo_args, "ours", sys.executable)
    print_medians(results, ["total", "generate", "train"])
    ours = results["ours-grpo"]
    summary = side_fields("ours", ours, OURS_FIELDS)
    if "trl-grpo" in results:
        trl = results["trl-grpo"]
        summary.update(side_fields("trl", trl, TRL_FIELDS))
        summary.update(speedup_vs_trl=speedup(trl, ours), trl_versions=trl["versions"])
    if "ours-ppo" in results:
        ppo = results["ours-ppo"]
        summary.update(side_fields("ours_ppo", ppo, {"sec_per_iter": "total", "peak_rss_mb": "peak_rss_mb"}))
        summary["speedup_vs_ours_ppo"] = speedup(ppo, ours)
    summary.update(
        shape={"prompts": args.prompts, "generations": args.generations, "prompt": args.prompt,
               "response": args.response, "hidden": args.hidden, "layers": args.layers, "vocab": args.vocab},
        threads=args.threads, iters=args.iters, warmup=args.warmup, load_average=round(os.getloadavg()[0], 2),
    )  # fmt: skip
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
