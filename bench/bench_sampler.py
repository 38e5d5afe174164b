"""Top-p sampling step alone: the full-vocabulary sort against the top-K prefilter `TokenSampler` uses.

    python bench/bench_sampler.py                 # [8, 32000] logits, top_p 0.9, peaked and flat rows
    python bench/bench_sampler.py --vocab 2000 --reps 2    # smoke run (tests/test_bench_smoke.py)

One jitted `TokenSampler` call per timing (GRAPH mode, 2 threads), min and median of `--reps` calls after 3 warm
ones. "peaked" logits are randn * 6 (the nucleus lies inside the top 1024, as for a trained LM), "flat" randn * 0.3
(it does not, so the prefilter falls back to the sort). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import mindspore as ms
    from mindspore import Tensor, nn

    from mindrlhf.generation.sampling import TOP_P_PREFILTER, SamplingSpec, TokenSampler

    ms.set_context(mode=ms.GRAPH_MODE)
    ms.device_context.cpu.op_tuning.threads_num(args.threads)

    class Step(nn.Cell):
        def __init__(self, prefilter):
            super().__init__()
            self.sampler = TokenSampler(SamplingSpec(False, 0, True), args.vocab, top_p_prefilter=prefilter)

        @ms.jit
        def construct(self, logits, temperature, top_p, uniform):
            return self.sampler(logits, temperature, top_p, uniform)

    rng = np.random.RandomState(0)
    uniform = Tensor(1.0 - rng.random_sample(args.batch).astype(np.float32))
    one, top_p = Tensor(np.float32(1.0)), Tensor(np.float32(args.top_p))
    prefilter = min(TOP_P_PREFILTER, args.vocab // 2)
    result = {"vocab": args.vocab, "batch": args.batch, "top_p": args.top_p, "prefilter": prefilter}
    for kind, scale in (("peaked", 6.0), ("flat", 0.3)):
        logits = Tensor(rng.randn(args.batch, args.vocab).astype(np.float32) * scale)
        tokens = {}
        for label, k in (("sort", args.vocab), ("prefilter", prefilter)):
            step = Step(k)
            for _ in range(3):
                out = step(logits, one, top_p, uniform)
            tokens[label] = out[0].asnumpy()
            times = []
            for _ in range(args.reps):
                start = time.perf_counter()
                step(logits, one, top_p, uniform)[0].asnumpy()
                times.append(time.perf_counter() - start)
            times.sort()
            result[f"{kind}_{label}_ms"] = round(times[0] * 1000, 3)
            print(
                f"{kind:7s} {label:10s} min {times[0] * 1000:7.2f} ms  median {times[len(times) // 2] * 1000:7.2f} ms",
                flush=True,
            )
        result[f"{kind}_same_tokens"] = bool((tokens["sort"] == tokens["prefilter"]).all())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
