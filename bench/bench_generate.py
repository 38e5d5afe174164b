"""Generation throughput: our KV-cache generate vs our no-cache recompute vs transformers' generate (torch CPU).

    python bench/bench_generate.py            # the documented shape (docs/benchmarks.md, "## Generation")
    python bench/bench_generate.py --small    # seconds-long smoke run (used by tests/test_generation.py)

One random Llama is built with transformers, saved, and converted with `mindrlhf.tools.convert_hf.hf_to_ms`, so all
three paths run the same weights in this process. Greedy decoding, EOS disabled, every row makes exactly N tokens.
Tokens/s = B*N / wall time of a whole generate call (prefill included), median over --reps warm calls, (a) and
(c) alternating so that load from other processes on a shared machine hits both alike. Compile time is reported
separately (first call minus a warm call) and is not in tokens/s. MindSpore and torch get the same CPU thread
count (--threads).
(b) no-cache recompute: each step runs the full forward over the sequence padded to P+N (one jitted graph, the
LM head on the current position only) and appends the argmax.
The last line printed is one JSON object (kv_tokens_per_s, nocache_tokens_per_s, hf_tokens_per_s, peak_rss_mb, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SHAPES = {
    "default": dict(
        hidden=512, layers=8, heads=8, kv_heads=8, vocab=32000, batch=8, prompt_len=64, new_tokens=128
    ),
    "small": dict(hidden=64, layers=2, heads=4, kv_heads=2, vocab=512, batch=2, prompt_len=8, new_tokens=8),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="tiny model and shapes: a smoke run in seconds")
    for name, value in SHAPES["default"].items():
        p.add_argument(
            f"--{name}", type=int, default=None, help=f"default {value} (--small: {SHAPES['small'][name]})"
        )
    p.add_argument(
        "--reps", type=int, default=None, help="timed warm calls of (a) and (c) (default 5, --small 1)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU kernel threads for both MindSpore and torch (default: CPUs)",
    )
    p.add_argument("--skip-nocache", action="store_true", help="skip (b), the slow no-cache recompute")
    p.add_argument("--skip-hf", action="store_true", help="skip (c), transformers generate")
    args = p.parse_args(argv)
    shape = SHAPES["small" if args.small else "default"]
    for name, value in shape.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.reps = args.reps or (1 if args.small else 5)
    args.threads = args.threads or len(os.sched_getaffinity(0))
    return args


def build_models(args, workdir):
    """A random HF Llama saved to `workdir`, and the same weights converted into our LlamaForCausalLM."""
    import torch
    import transformers

    from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM
    from mindrlhf.tools.convert_hf import hf_to_ms
    from mindrlhf.utils.checkpoint import load_param_dict

    ffn = LlamaConfig(hidden_size=args.hidden, num_heads=args.heads).ffn_hidden_size  # Llama2's 8H/3 rule
    hf_config = transformers.LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=ffn,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        max_position_embeddings=max(256, args.prompt_len + args.new_tokens),
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    hf.save_pretrained(workdir, safe_serialization=True)
    config, params = hf_to_ms(workdir)
    ours = LlamaForCausalLM(config)
    load_param_dict(ours, params)
    hf.generation_config.eos_token_id = None  # EOS disabled: every row makes exactly N tokens
    hf.generation_config.pad_token_id = 0
    return hf, ours


def wall(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def make_nocache_generate(model, batch, total):
    """(b): greedy generation recomputing the whole padded sequence each step (one graph for every step)."""
    import mindspore as ms
    from mindspore import Tensor, nn, ops

    class FullStep(nn.Cell):
        def __init__(self, model):
            super().__init__(auto_prefix=False)
            self.model = model

        @ms.jit
        def construct(self, input_ids, attention_mask, position):
            hidden = self.model.model(input_ids, attention_mask)  # (B, total, H)
            last = ops.gather(hidden, position.reshape(1), 1)  # (B, 1, H)
            logits = self.model.lm_head(last).astype(ms.float32).reshape(input_ids.shape[0], -1)
            return ops.argmax(logits, -1).astype(ms.int32)

    step = FullStep(model)

    def generate(prompt, new_tokens):
        p = prompt.shape[1]
        ids = np.zeros((batch, total), np.int32)
        mask = np.zeros((batch, total), np.int32)
        ids[:, :p], mask[:, :p] = prompt, 1
        for i in range(new_tokens):
            token = step(Tensor(ids), Tensor(mask), Tensor(np.int32(p + i - 1))).asnumpy()
            ids[:, p + i], mask[:, p + i] = token, 1
        return ids[:, : p + new_tokens]

    return generate


def make_matmul_floor(model, batch):
    """Only the decode step's weight matmuls ([B, in] x W^T for every Linear, LM head included) on the model's
    own Parameters: the cost of streaming the weights once, a floor for any one-token step."""
    import mindspore as ms
    from mindspore import ParameterTuple, Tensor, nn, ops

    class Floor(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            params = [p for n, p in model.parameters_and_names() if n.endswith(".weight") and p.ndim == 2]
            self.weights = ParameterTuple(params)
            self.matmul = ops.MatMul(transpose_b=True)

        @ms.jit
        def construct(self, x):
            total = ops.zeros((), ms.float32)
            for w in self.weights:
                total = total + self.matmul(x[:, : w.shape[1]], w)[:1, :1].sum()
            return total

    widest = max(p.shape[1] for n, p in model.parameters_and_names() if n.endswith(".weight") and p.ndim == 2)
    x = Tensor(np.random.default_rng(1).standard_normal((batch, widest)).astype(np.float32))
    floor = Floor()
    return lambda: floor(x).asnumpy()


def main(argv=None) -> int:
    args = parse_args(argv)
    import mindspore as ms
    import torch

    torch.set_num_threads(args.threads)
    ms.device_context.cpu.op_tuning.threads_num(args.threads)
    load_before = os.getloadavg()[0]
    from mindrlhf.generation import generate

    b, p, n = args.batch, args.prompt_len, args.new_tokens
    print(
        f"shape: hidden {args.hidden}, {args.layers} layers, {args.heads} heads ({args.kv_heads} kv), vocab "
        f"{args.vocab}; batch {b}, prompt {p}, {n} new tokens, greedy, EOS off; {args.threads} threads (MindSpore "
        f"and torch); load average {load_before:.1f} on {os.cpu_count()} CPUs",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as workdir:
        hf, ours = build_models(args, workdir)
    prompt = np.random.default_rng(0).integers(3, args.vocab, (b, p)).astype(np.int32)
    results, seqs = {}, {}

    kv_generate = lambda: generate(ours, prompt, None, max_new_tokens=n)  # noqa: E731
    ids_t = torch.tensor(prompt, dtype=torch.long)

    def hf_generate():
        with torch.no_grad():
            out = hf.generate(ids_t, attention_mask=torch.ones_like(ids_t), max_new_tokens=n, do_sample=False)
        return out.numpy()

    # First calls: ours compiles its two graphs here; transformers warms up.
    kv_first, out = wall(kv_generate)
    if not args.skip_hf:
        wall(hf_generate)
    floor = make_matmul_floor(ours, b)
    floor()
    # (a) and (c) timed alternately, so a change of load on a shared machine hits both alike; medians.
    kv_times, hf_times, decode_ms, floor_ms = [], [], [], []
    for _ in range(args.reps):
        t, out = wall(kv_generate)
        kv_times.append(t)
        decode_ms.append(1000 * out.timings["decode_s"] / max(n - 1, 1))
        floor_ms.append(1000 * float(np.median([wall(floor)[0] for _ in range(5)])))
        if not args.skip_hf:
            t, seqs["hf"] = wall(hf_generate)
            hf_times.append(t)
    seqs["kv"] = out.sequences
    kv_time = float(np.median(kv_times))
    results["kv_tokens_per_s"] = b * n / kv_time
    results["kv_compile_s"] = max(kv_first - kv_time, 0.0)
    results["kv_first_call_tokens_per_s"] = b * n / kv_first
    results["kv_prefill_ms"] = 1000 * out.timings["prefill_s"]
    results["kv_decode_ms_per_step"] = float(np.median(decode_ms))
    results["matmul_floor_ms_per_step"] = float(np.median(floor_ms))
    print(
        f"(a) ours, KV cache:   {results['kv_tokens_per_s']:8.1f} tok/s  (prefill {results['kv_prefill_ms']:.0f} ms, "
        f"decode {results['kv_decode_ms_per_step']:.1f} ms/step; first call {kv_first:.1f} s = compile "
        f"{results['kv_compile_s']:.1f} s + run)",
        flush=True,
    )
    print(
        f"    weight matmuls alone (floor of a one-token step): {results['matmul_floor_ms_per_step']:.1f} ms"
    )
    if not args.skip_hf:
        assert seqs["hf"].shape == (b, p + n), seqs["hf"].shape
        hf_time = float(np.median(hf_times))
        results["hf_tokens_per_s"] = b * n / hf_time
        print(
            f"(c) transformers:     {results['hf_tokens_per_s']:8.1f} tok/s  ({1000 * hf_time / n:.1f} ms/token)"
        )

    # (b) ours, no cache: one short call compiles its graph (same padded shape), then one timed full run
    if not args.skip_nocache:
        nocache = make_nocache_generate(ours, b, p + n)
        first, _ = wall(lambda: nocache(prompt, 1))
        warm, seqs["nocache"] = wall(lambda: nocache(prompt, n))
        results["nocache_tokens_per_s"] = b * n / warm
        results["nocache_compile_s"] = max(first - warm / n, 0.0)
        print(
            f"(b) ours, no cache:   {results['nocache_tokens_per_s']:8.1f} tok/s  ({1000 * warm / n:.0f} ms/step; "
            f"compile {results['nocache_compile_s']:.1f} s)",
            flush=True,
        )

    for other in ("nocache", "hf"):
        if other in seqs:
            same = float(np.mean(np.all(seqs[other][:, p:] == seqs["kv"][:, p:], axis=1)))
            results[f"rows_equal_kv_vs_{other}"] = same
            key = f"{other}_tokens_per_s"
            print(f"(a)/({'b' if other == 'nocache' else 'c'}) = {results['kv_tokens_per_s'] / results[key]:.2f}x; "
                  f"identical greedy rows: {same:.0%}")  # fmt: skip
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["threads"] = args.threads
    results["loadavg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]  # before, after
    results.setdefault("nocache_tokens_per_s", None)
    results.setdefault("hf_tokens_per_s", None)
    print(f"peak RSS {results['peak_rss_mb']:.0f} MB")
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in results.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
