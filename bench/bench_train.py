"""Training-step efficiency: achieved FLOP/s of one optimiser step against this machine's fp32 matmul rate.

    python bench/bench_train.py                          # hidden 512 and 1024 (docs/benchmarks.md)
    python bench/bench_train.py --hidden 256 --reps 3    # any widths

Model: random Llama, `--layers` layers, head_dim 64 (heads = hidden / 64, KV heads = heads), Llama2's FFN rule
(8H/3 rounded up to 256), vocab `--vocab`; batch `--batch` x `--seq` tokens, causal-LM cross-entropy
(`mindrlhf.trainer.losses.ptx_loss`), one `mindrlhf.trainer.train_step.TrainStep` (grad-norm clipping, finite
check, AdamW), fp32, GRAPH_MODE.
FLOPs per step: model = 6 * N * tokens, N = parameters of the matmuls (every Linear and the LM head; the
embedding table is a lookup and norms are elementwise, neither counted). Attention scores and the weighted sum
(QK^T, AV) are not in 6N: they add 12 * layers * seq * hidden per token (forward 4*s*h, backward twice that,
the full square, no causal halving); reported separately and as "with attention".
Peak = a 2048 x 2048 fp32 matmul under `ms.jit`, measured in the same run (2 * 2048^3 FLOP per call).
The step is also split: forward only (loss), forward + backward (`value_and_grad`), and the full step, so the
optimiser's share is visible. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden", type=int, nargs="+", default=[512, 1024])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--reps", type=int, default=5, help="timed calls of each kind (median)")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args(argv)


def median_time(fn, reps):
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_rate(reps):
    import mindspore as ms
    from mindspore import Tensor, ops

    @ms.jit
    def mm(a, b):
        return ops.matmul(a, b)

    rng = np.random.default_rng(0)
    a = Tensor(rng.standard_normal((2048, 2048), dtype=np.float32))
    b = Tensor(rng.standard_normal((2048, 2048), dtype=np.float32))
    mm(a, b).asnumpy()
    sec = median_time(lambda: mm(a, b).asnumpy(), max(reps, 5))
    return 2 * 2048**3 / sec


def bench_width(args, hidden):
    import mindspore as ms
    from mindspore import Tensor, nn

    from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM
    from mindrlhf.trainer import losses
    from mindrlhf.trainer.train_step import TrainStep, make_optimizer

    heads = max(hidden // 64, 1)
    config = LlamaConfig(
        seq_length=args.seq,
        hidden_size=hidden,
        num_layers=args.layers,
        num_heads=heads,
        vocab_size=args.vocab,
    )
    ms.set_seed(0)
    model = LlamaForCausalLM(config)

    class LMLoss(nn.Cell):
        def __init__(self, model):
            super().__init__(auto_prefix=False)
            self.model = model

        def construct(self, input_ids, attention_mask, loss_mask):
            loss = losses.ptx_loss(self.model(input_ids, attention_mask), input_ids, loss_mask)
            return loss, loss.reshape(1)

    loss_cell = LMLoss(model)
    steps = 1000
    optimizer = make_optimizer(model.trainable_params(), np.full(steps, 1e-5, np.float32), 0.0)
    step = TrainStep(loss_cell, optimizer, max_grad_norm=1.0)

    class Forward(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.loss = loss_cell

        @ms.jit
        def construct(self, *inputs):
            return self.loss(*inputs)[0]

    class ForwardBackward(nn.Cell):
        def __init__(self):
            super().__init__(auto_prefix=False)
            self.grad = ms.value_and_grad(loss_cell, None, optimizer.parameters, has_aux=True)

        @ms.jit
        def construct(self, *inputs):
            (loss, _), grads = self.grad(*inputs)
            return loss, grads

    rng = np.random.default_rng(0)
    ids = Tensor(rng.integers(3, args.vocab, (args.batch, args.seq)).astype(np.int32))
    mask = Tensor(np.ones((args.batch, args.seq), np.int32))
    lmask = Tensor(np.ones((args.batch, args.seq), np.float32))
    forward, fwd_bwd = Forward(), ForwardBackward()
    results = {}
    for name, fn in (
        ("forward", lambda: forward(ids, mask, lmask).asnumpy()),
        ("forward_backward", lambda: fwd_bwd(ids, mask, lmask)[0].asnumpy()),
        ("step", lambda: step(ids, mask, lmask)[0].asnumpy()),
    ):
        start = time.perf_counter()
        fn()
        results[f"{name}_first_s"] = time.perf_counter() - start
        results[f"{name}_s"] = median_time(fn, args.reps)

    matmul_params = sum(
        int(np.prod(p.shape)) for n, p in model.parameters_and_names() if p.ndim == 2 and "embedding" not in n
    )
    all_params = sum(int(np.prod(p.shape)) for p in model.get_parameters())
    tokens = args.batch * args.seq
    model_flop = 6 * matmul_params * tokens
    attn_flop = 12 * args.layers * args.seq * hidden * tokens
    results.update(
        hidden=hidden,
        heads=heads,
        ffn=config.ffn_hidden_size,
        params=all_params,
        matmul_params=matmul_params,
        tokens_per_step=tokens,
        model_gflop=model_flop / 1e9,
        attention_gflop=attn_flop / 1e9,
    )
    results["achieved_gflops"] = model_flop / results["step_s"] / 1e9
    results["achieved_gflops_with_attention"] = (model_flop + attn_flop) / results["step_s"] / 1e9
    results["fwd_bwd_gflops_with_attention"] = (model_flop + attn_flop) / results["forward_backward_s"] / 1e9
    return results


def main(argv=None) -> int:
    args = parse_args(argv)
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.device_context.cpu.op_tuning.threads_num(args.threads)
    print(
        f"layers {args.layers}, vocab {args.vocab}, batch {args.batch} x seq {args.seq}, fp32, {args.threads} "
        f"threads, GRAPH_MODE; load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    peak_before = matmul_rate(args.reps)
    rows = [bench_width(args, h) for h in args.hidden]
    peak_after = matmul_rate(args.reps)
    peak = max(
        peak_before, peak_after
    )  # the machine's rate: the better of two measurements bracketing the run
    print(
        f"fp32 2048^2 matmul under ms.jit: {peak_before / 1e9:.1f} GFLOP/s before, {peak_after / 1e9:.1f} after"
    )
    print(
        f"{'hidden':>6} {'params':>9} {'fwd_s':>7} {'fwd+bwd_s':>9} {'step_s':>7} {'GFLOP(6N)':>9} "
        f"{'+attn':>6} {'GFLOP/s':>8} {'w/attn':>7} {'of peak':>7}"
    )
    for r in rows:
        r["fraction_of_matmul_peak"] = r["achieved_gflops"] * 1e9 / peak
        r["fraction_of_matmul_peak_with_attention"] = r["achieved_gflops_with_attention"] * 1e9 / peak
        print(
            f"{r['hidden']:>6} {r['params'] / 1e6:8.1f}M {r['forward_s']:7.3f} {r['forward_backward_s']:9.3f} "
            f"{r['step_s']:7.3f} {r['model_gflop']:9.1f} {r['attention_gflop']:6.1f} {r['achieved_gflops']:8.1f} "
            f"{r['achieved_gflops_with_attention']:7.1f} {r['fraction_of_matmul_peak']:7.0%}"
        )
    out = {
        "matmul_gflops": round(peak / 1e9, 2),
        "matmul_gflops_before": round(peak_before / 1e9, 2),
        "matmul_gflops_after": round(peak_after / 1e9, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "widths": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows],
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
