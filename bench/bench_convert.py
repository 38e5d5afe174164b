"""Peak memory of HF -> MindSpore conversion: streamed (`convert_hf_dir`) vs the old all-in-memory path.

    python bench/bench_convert.py                 # ~510 MB float16 Llama, fp32 and fp16 outputs (docs/benchmarks.md)
    python bench/bench_convert.py --small         # seconds-long smoke run

A random float16 Llama (hidden 1024, 15 layers, vocab 32000: 255 M parameters) is written as one HF
`model.safetensors` + `config.json`, tensor by tensor. Each conversion then runs in a fresh subprocess, which
reports its own peak RSS (VmHWM) and its RSS right after importing mindspore and mindrlhf (the floor no
conversion can go below). "materialised" is the previous implementation: `hf_to_ms` (every tensor in memory)
followed by `mindrlhf.utils.checkpoint.save_checkpoint` (MindSpore's save of a full list). The outputs of both
paths are compared tensor by tensor. The last line printed is one JSON object.
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SHAPES = {
    "default": dict(hidden=1024, layers=15, heads=16, ffn=2816, vocab=32000),
    "small": dict(hidden=64, layers=2, heads=4, ffn=176, vocab=512),
}


def _status_mb(key: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process. VmHWM belongs to the address space, which exec replaces,
    whereas ru_maxrss also carries the peak of the forked parent image from before the exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def write_model(path: str, s: dict) -> int:
    """A random float16 HF Llama directory, written one tensor at a time; returns the weight bytes."""
    from mindrlhf.models.llama import LlamaConfig
    from mindrlhf.models.llama.model import llama_param_shapes
    from mindrlhf.tools.convert_hf import ms_to_hf_name

    config = LlamaConfig(
        hidden_size=s["hidden"],
        num_layers=s["layers"],
        num_heads=s["heads"],
        vocab_size=s["vocab"],
        intermediate_size=s["ffn"],
        seq_length=512,
    )
    shapes = {ms_to_hf_name(n): shape for n, shape in llama_param_shapes(config).items()}
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape)) * 2
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    os.makedirs(path, exist_ok=True)
    rng = np.random.RandomState(0)
    with open(os.path.join(path, "model.safetensors"), "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        for shape in shapes.values():
            f.write((0.02 * rng.standard_normal(shape)).astype(np.float16).tobytes())
    from mindrlhf.tools.convert_hf import config_to_hf

    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config_to_hf(config, "float16"), f)
    return offset


def worker(impl: str, hf_dir: str, out: str, dtype: str) -> None:
    import mindspore  # noqa: F401

    from mindrlhf.tools import convert_hf

    floor = _status_mb("VmRSS")
    start = time.perf_counter()
    if impl == "streamed":
        convert_hf.convert_hf_dir(hf_dir, out, dtype=dtype)
    else:
        from mindrlhf.utils.checkpoint import save_checkpoint

        _, params = convert_hf.hf_to_ms(hf_dir, dtype)
        save_checkpoint(params, out)
    seconds = time.perf_counter() - start
    peak = _status_mb("VmHWM")
    print(
        json.dumps(
            {"floor_rss_mb": round(floor, 1), "peak_rss_mb": round(peak, 1), "seconds": round(seconds, 2)}
        )
    )


def run(impl: str, hf_dir: str, out: str, dtype: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", impl, "--hf_dir", hf_dir, "--out", out]
    proc = subprocess.run(cmd + ["--dtype", dtype], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"{impl} {dtype} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true")
    p.add_argument("--worker", choices=["streamed", "materialised"])
    p.add_argument("--hf_dir")
    p.add_argument("--out")
    p.add_argument("--dtype", default="float32")
    args = p.parse_args(argv)
    if args.worker:
        worker(args.worker, args.hf_dir, args.out, args.dtype)
        return 0
    shape = SHAPES["small" if args.small else "default"]
    result = {"shape": shape}
    with tempfile.TemporaryDirectory(prefix="bench_convert_") as tmp:
        hf_dir = os.path.join(tmp, "hf")
        input_bytes = write_model(hf_dir, shape)
        result["input_fp16_mb"] = round(input_bytes / 2**20, 1)
        for dtype in ("float32", "float16"):
            outs = {}
            for impl in ("materialised", "streamed"):
                outs[impl] = os.path.join(tmp, f"{impl}_{dtype}.ckpt")
                r = run(impl, hf_dir, outs[impl], dtype)
                r["output_mb"] = round(os.path.getsize(outs[impl]) / 2**20, 1)
                r["peak_over_input"] = round(r["peak_rss_mb"] / result["input_fp16_mb"], 2)
                r["peak_above_floor_mb"] = round(r["peak_rss_mb"] - r["floor_rss_mb"], 1)
                result[f"{impl}_{dtype}"] = r
                print(f"{impl:>12} -> {dtype}: {r}", file=sys.stderr)
            with open(outs["streamed"], "rb") as a, open(outs["materialised"], "rb") as b:
                same = all(
                    x == y
                    for x, y in zip(iter(lambda: a.read(1 << 24), b""), iter(lambda: b.read(1 << 24), b""))
                )
                same = same and os.path.getsize(outs["streamed"]) == os.path.getsize(outs["materialised"])
            result[f"identical_files_{dtype}"] = same
            for impl in outs:
                os.remove(outs[impl])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
