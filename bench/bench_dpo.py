"""One DPO training step, ours (MindSpore, GRAPH_MODE) against TRL 0.23.1's `DPOTrainer` (torch, CPU), same shape.

    python bench/bench_ppo.py --setup-trl    # once: bench/.venv-trl with torch 2.13, transformers<4.58, trl 0.23.1
    python bench/bench_dpo.py                # ours, then TRL, 1 thread each, one run
    python bench/bench_dpo.py --smoke        # our side only, tiny model, 1 + 1 steps (tests/test_bench_dpo_smoke.py)

Shape (default, bench_ppo's model): random Llama, vocab 1000, hidden 256, intermediate 688, 4 layers, 4 heads,
2 KV heads, fp32; a batch of B=8 pairs, each a 32-token prompt + a 32-token chosen / rejected answer + EOS
(65 tokens, no padding, the answers differ from their first token), loss_type sigmoid, beta 0.1, AdamW, global
gradient-norm clip 1.0, reference log-probs from a frozen copy of the policy computed per batch (TRL's default
`precompute_ref_log_probs=False`, ours too).
  ours: the real `DPOTrainer` classes: one step = next batch, the jitted reference forward (`FrozenPairLogps`),
        the jitted TrainStep over `DPOPairLoss` (one [2B, T] policy forward + backward + AdamW), and a read-back
        of the loss (a host sync every step, which the trainer itself only does every log_interval steps).
  TRL:  `trl.DPOTrainer.train()` on the same token ids (as text over a word-level tokenizer), `ref_model` given,
        logging and saving off; one step = the time between consecutive `on_step_end` callbacks (data loading,
        reference forward, policy forward/backward, metrics `.item()`s, clip, AdamW step, scheduler).
Each side runs in its own subprocess with 1 thread (`--threads`); the first `--warmup` steps are excluded
(compile / allocator warm-up), the median of `--iters` timed steps is reported. Helpers (TRL venv, peak RSS,
compile counter, medians, child processes, reporting) come from bench/_common.py, shared with bench_ppo.py and
bench_grpo.py.
The last line printed is one JSON object: {"ours_sec_per_step", "trl_sec_per_step", ...}.
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

DEFAULT = dict(
    vocab=1000, hidden=256, intermediate=688, layers=4, heads=4, kv_heads=2, batch=8, prompt=32, response=32
)
SMOKE = dict(
    vocab=64, hidden=32, intermediate=48, layers=2, heads=4, kv_heads=2, batch=4, prompt=8, response=6
)
BETA = 0.1
LR = 1e-6
# summary-JSON name -> the side's key (bench/_common.side_fields)
FIELDS = {"sec_per_step": "total", "first_step_sec": "first_iter", "peak_rss_mb": "peak_rss_mb"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny model, our side only, 1 warm-up + 1 timed step")
    for name, value in DEFAULT.items():
        p.add_argument(
            f"--{name.replace('_', '-')}", dest=name, type=int, default=None, help=f"default {value}"
        )
    p.add_argument("--iters", type=int, default=None, help="timed steps per side (default 10)")
    p.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 2)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for MindSpore and torch (default 1)")
    p.add_argument("--skip-trl", action="store_true", help="our side only")
    p.add_argument(
        "--trl-python", default=os.path.join(TRL_VENV, "bin", "python"), help="python of the TRL env"
    )
    p.add_argument("--side", choices=["ours", "trl"], help=argparse.SUPPRESS)  # child process
    args = p.parse_args(argv)
    for name, value in (SMOKE if args.smoke else DEFAULT).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.iters = args.iters or (1 if args.smoke else 10)
    args.warmup = (1 if args.smoke else 2) if args.warmup is None else args.warmup
    args.skip_trl = args.skip_trl or args.smoke
    return args


def pairs(args) -> dict:
    """`(warmup + iters) * B` pairs `{prompt, chosen, rejected: int [N, len]}`, ids in [4, vocab) (no pad, BOS,
    EOS or unk); a rejected answer's first token differs from the chosen one's. The same on both sides."""
    n = (args.warmup + args.iters) * args.batch
    rng = np.random.default_rng(0)
    prompt = rng.integers(4, args.vocab, (n, args.prompt))
    chosen = rng.integers(4, args.vocab, (n, args.response))
    rejected = rng.integers(4, args.vocab, (n, args.response))
    rejected[:, 0] = 4 + (chosen[:, 0] - 4 + 1) % (args.vocab - 4)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


# ---------------------------------------------------------------------------------------------------- ours
def run_ours(args) -> dict:
    import mindspore as ms
    from mindspore import Tensor

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.device_context.cpu.op_tuning.threads_num(args.threads)
    compiles = count_compiles()

    from mindrlhf.configs.dpo_config import DPOConfig
    from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM
    from mindrlhf.models.roles import freeze
    from mindrlhf.trainer.dpo_trainer import DPOTrainer, FrozenPairLogps

    data = pairs(args)
    eos = np.full((len(data["prompt"]), 1), 2)
    chosen = np.concatenate([data["prompt"], data["chosen"], eos], 1).astype(np.int32)  # [N, P + R + 1]
    rejected = np.concatenate([data["prompt"], data["rejected"], eos], 1).astype(np.int32)
    rows = {
        "chosen_ids": chosen,
        "chosen_mask": np.ones_like(chosen),
        "rejected_ids": rejected,
        "rejected_mask": np.ones_like(rejected),
    }
    ms.set_seed(0)
    config = LlamaConfig(
        seq_length=chosen.shape[1], hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_layers=args.layers, num_heads=args.heads, n_kv_heads=args.kv_heads, vocab_size=args.vocab,
    )  # fmt: skip
    policy, ref_model = LlamaForCausalLM(config), LlamaForCausalLM(config)
    for (_, a), (_, r) in zip(policy.parameters_and_names(), ref_model.parameters_and_names()):
        r.set_data(Tensor(a.asnumpy()))
    dpo = DPOConfig(
        batch_size=args.batch, learning_rate=LR, beta=BETA, loss_type="sigmoid", shuffle=False, warmup_steps=0,
        max_steps=args.warmup + args.iters, eval_fraction=0.0, lr_decay="linear", min_lr_ratio=0.0,
        weight_decay=0.0, adam_beta2=0.999,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        trainer = DPOTrainer(dpo, policy, FrozenPairLogps(freeze(ref_model)), rows, None, tmp)
        stream = trainer._batch_stream()
        timings = []
        for i in range(args.warmup + args.iters):
            start = time.perf_counter()
            batch = next(stream)  # includes the reference forward (ReferencePerBatch)
            loss, metrics, _, _ = trainer.train_step(*(Tensor(batch[k]) for k in trainer.input_keys))
            loss = float(loss.asnumpy())
            timings.append({"total": time.perf_counter() - start, "compiled_graphs": len(compiles)})
            print(f"  ours step {i}: {timings[-1]['total']:.4f} s, loss {loss:.6f}", flush=True)
        assert np.isfinite(loss) and np.isfinite(metrics.asnumpy()).all()
    return summarise(timings, args.warmup, peak_rss_mb())


# ---------------------------------------------------------------------------------------------------- TRL
def run_trl(args) -> dict:
    import torch
    import transformers
    import trl
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.set_num_threads(args.threads)
    cfg = dict(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(128, args.prompt + args.response + 1), tie_word_embeddings=False,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    torch.manual_seed(0)
    policy = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg))
    reference.load_state_dict(policy.state_dict())
    # Special tokens must not be substrings of words: the fast tokenizer splits "t123" around a special "t1".
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{f"w{i}": i for i in range(4, args.vocab)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    data = pairs(args)
    text = {k: [" ".join(f"w{i}" for i in row) for row in v] for k, v in data.items()}
    # TRL: prompt + " " separation is the tokenizer's (whitespace); completions get EOS appended -> P + R + 1.
    text["chosen"] = [" " + s for s in text["chosen"]]
    text["rejected"] = [" " + s for s in text["rejected"]]
    steps = []  # (name, time)

    class Timer(transformers.TrainerCallback):
        def on_step_begin(self, *a, **k):
            steps.append(("begin", time.perf_counter()))

        def on_step_end(self, *a, **k):
            steps.append(("end", time.perf_counter()))

    with tempfile.TemporaryDirectory() as tmp:
        config = trl.DPOConfig(
            output_dir=tmp, per_device_train_batch_size=args.batch, max_steps=args.warmup + args.iters,
            learning_rate=LR, beta=BETA, loss_type="sigmoid", max_grad_norm=1.0, weight_decay=0.0,
            lr_scheduler_type="linear", warmup_steps=0, logging_strategy="no", save_strategy="no",
            report_to="none", use_cpu=True, bf16=False, fp16=False, dataloader_num_workers=0, disable_tqdm=True,
            seed=0, precompute_ref_log_probs=False,
        )  # fmt: skip
        trainer = trl.DPOTrainer(
            model=policy, ref_model=reference, args=config, train_dataset=Dataset.from_dict(text),
            processing_class=tokenizer, callbacks=[Timer()],
        )  # fmt: skip
        sample = trainer.train_dataset[0]
        assert sample["prompt_input_ids"] == data["prompt"][0].tolist(), sample["prompt_input_ids"]
        assert sample["chosen_input_ids"] == [*data["chosen"][0].tolist(), 2], sample["chosen_input_ids"]
        trainer.train()
    ends = [t for name, t in steps if name == "end"]
    first_begin = next(t for name, t in steps if name == "begin")
    totals = [ends[0] - first_begin] + [b - a for a, b in zip(ends, ends[1:])]
    for i, t in enumerate(totals):
        print(f"  trl step {i}: {t:.4f} s", flush=True)
    return {
        **summarise([{"total": t} for t in totals], args.warmup, peak_rss_mb()),
        "versions": trl_versions(),
    }


# ---------------------------------------------------------------------------------------------------- driver
def run_side(args, side: str, python: str) -> dict:
    argv = side_argv(side, args, DEFAULT)
    return run_child(__file__, python, argv, args.threads)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.side == "ours":
        print(json.dumps(run_ours(args)))
        return 0
    if args.side == "trl":
        print(json.dumps(run_trl(args)))
        return 0
    print(
        f"shape: vocab {args.vocab}, hidden {args.hidden}, intermediate {args.intermediate}, {args.layers} layers, "
        f"{args.heads} heads ({args.kv_heads} kv); {args.batch} pairs x ({args.prompt} prompt + {args.response} "
        f"answer + EOS) tokens, sigmoid DPO, fp32, {args.threads} thread(s); {args.warmup} warm-up + {args.iters} "
        f"timed steps; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    results = {"ours": run_side(args, "ours", sys.executable)}
    if not args.skip_trl and trl_available(args.trl_python):
        results["trl"] = run_side(args, "trl", args.trl_python)
    print_medians(results, ["total"], unit="step")
    ours = results["ours"]
    summary = side_fields("ours", ours, {**FIELDS, "compiled_graphs_after_warmup": "compiled_graphs"})
    if "trl" in results:
        trl = results["trl"]
        summary.update(side_fields("trl", trl, FIELDS))
        summary.update(speedup_vs_trl=speedup(trl, ours), trl_versions=trl["versions"])
    summary.update(shape={k: getattr(args, k) for k in DEFAULT}, threads=args.threads, iters=args.iters,
                   warmup=args.warmup)  # fmt: skip
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
