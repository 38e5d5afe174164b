"""What bench_ppo.py, bench_dpo.py and bench_grpo.py share: where TRL lives, measuring a side in its own process,
and reporting the sides (median table, summary-JSON fields, speed-ups).

    from _common import ROOT, TRL_VENV, count_compiles, peak_rss_mb, summarise        # in a side (child process)
    result = run_child(__file__, python, ["--side", "ours", ...], threads)             # in the driver
    if trl_available(args.trl_python): ...
    summary.update(side_fields("ours", result, {"sec_per_iter": "total"}))

Each side runs in its own subprocess, so its peak RSS (`ru_maxrss`) is that framework's alone; the child prints
progress lines and, last, one JSON object (`summarise`'s), which `run_child` returns.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
from typing import Dict, List, Mapping, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRL_VENV = os.path.join(ROOT, "bench", ".venv-trl")
"""The TRL environment (`python bench/bench_ppo.py --setup-trl` creates it); `--trl-python` points elsewhere."""


def peak_rss_mb() -> float:
    """This process's peak resident set size in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def count_compiles() -> list:
    """A list that grows by one name per graph MindSpore compiles from now on (jit functions and cells)."""
    from mindspore.graph import api as graph_api

    compiled = []
    check = graph_api._check_recompile  # called by _JitExecutor.compile only when the phase is not cached

    def counting_check(obj, compile_args, kwargs, full_function_name, *rest):
        compiled.append(full_function_name)
        return check(obj, compile_args, kwargs, full_function_name, *rest)

    graph_api._check_recompile = counting_check
    cell_compile = graph_api._CellGraphExecutor.compile

    def counting_cell_compile(self, obj, *a, **k):
        phase, is_new = cell_compile(self, obj, *a, **k)
        if is_new:
            compiled.append(type(obj).__name__)
        return phase, is_new

    graph_api._CellGraphExecutor.compile = counting_cell_compile
    return compiled


def summarise(rows: List[Mapping[str, float]], warmup: int, rss: float) -> dict:
    """Per-iteration rows -> the median of every key over the timed rows (all rows if there are no more than
    `warmup`), plus "iters" (the timed totals), "first_iter" (row 0's total) and "peak_rss_mb"."""
    timed = rows[warmup:] or rows
    out = {k: statistics.median(r[k] for r in timed) for k in timed[0]}
    out["iters"] = [round(r["total"], 4) for r in timed]
    out["first_iter"] = rows[0]["total"]
    out["peak_rss_mb"] = rss
    return out


def side_argv(side: str, args, shape: Sequence[str]) -> List[str]:
    """The flags every bench passes to one side's child: side, threads, iterations, warm-up, and the shape fields
    named in `shape` (attributes of `args`, as `--kv-heads` style flags)."""
    argv = [
        "--side",
        side,
        "--threads",
        str(args.threads),
        "--iters",
        str(args.iters),
        "--warmup",
        str(args.warmup),
    ]
    for name in shape:
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    return argv


def run_child(script: str, python: str, argv: Sequence[str], threads: int) -> dict:
    """Run `python script *argv` from the repository root with `threads` OpenMP threads; echo its output but the
    last line, and return that last line parsed as JSON. Raises RuntimeError naming the side when it fails."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=ROOT, TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [python, os.path.abspath(script), *argv], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    lines = proc.stdout.strip().splitlines()
    for line in lines[:-1]:
        print(line, flush=True)
    if proc.returncode != 0 or not lines:
        side = argv[list(argv).index("--side") + 1] if "--side" in argv else os.path.basename(script)
        raise RuntimeError(f"{side} side failed (exit {proc.returncode}); see its output above")
    return json.loads(lines[-1])


def trl_available(trl_python: str) -> bool:
    """True when the TRL environment's python exists; otherwise say how to create it and return False."""
    if os.path.exists(trl_python):
        return True
    print(f"TRL side skipped: {trl_python} not found (run `python bench/bench_ppo.py --setup-trl`)")
    return False


def trl_versions() -> Dict[str, str]:
    """The versions a TRL side ran with (call it in the TRL child)."""
    import torch
    import transformers
    import trl

    return {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__}


def side_fields(prefix: str, result: Mapping, fields: Mapping[str, str]) -> Dict[str, float]:
    """Summary-JSON fields of one side: `{f"{prefix}_{name}": round(result[key])}` for every `name: key` of
    `fields` whose key the side reported (seconds to 4 decimals, "first_*" to 2, MB to 1, counts as they are)."""
    out = {}
    for name, key in fields.items():
        if key not in result:
            continue
        value = result[key]
        if isinstance(value, float):
            value = round(value, 2 if name.startswith("first") else 1 if name.endswith("_mb") else 4)
        out[f"{prefix}_{name}"] = value
    return out


def speedup(baseline: Mapping, ours: Mapping, key: str = "total") -> float:
    """`baseline[key] / ours[key]` to 2 decimals: > 1 means ours is faster."""
    return round(baseline[key] / ours[key], 2)


def print_medians(results: Mapping[str, Mapping], columns: Sequence[str], unit: str = "iteration") -> None:
    """The human-readable table: one row per side, the median seconds of `columns` ("-" where a side has no such
    phase), the first iteration's seconds and the side's peak RSS."""
    width = max([10] + [len(name) for name in results])
    print(f"\nmedian seconds per {unit} (first {unit} and peak RSS of each side's process)")
    print(f"{'side':<{width}} " + " ".join(f"{c:>8}" for c in columns) + f" {'first_it':>9} {'rss_mb':>9}")
    for name, r in results.items():
        cells = " ".join(f"{r[c]:8.3f}" if c in r else f"{'-':>8}" for c in columns)
        print(f"{name:<{width}} {cells} {r['first_iter']:9.2f} {r['peak_rss_mb']:9.0f}")
