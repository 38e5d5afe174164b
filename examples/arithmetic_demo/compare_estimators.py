"""The estimator table for docs/: GRPO vs Dr. GRPO vs RLOO vs PPO (gae) on the arithmetic task, same budget,
several seeds, mean and spread of the held-out accuracy gain.

    python examples/arithmetic_demo/compare_estimators.py [--seeds 0,1,2] [--estimators grpo,dr_grpo,rloo,gae] \
        [--output_dir output/arithmetic_estimators] [--quick]

Each seed is one `run_demo.py --seed N --estimators ... --output_dir OUT/seed_N`, seed after seed (so a comparison
cut short still has every estimator of the seeds it finished). Within a seed folder the SFT model is trained once
(OUT/seed_N/sft/result.json) and every estimator starts from it, so the estimators differ only in the RL stage;
each RL run writes OUT/seed_N/rl_<estimator>/result.json as soon as it is evaluated, and a later invocation
skips finished runs and restarts unfinished ones. So a comparison can be resumed after a crash or a kill with the
same command, and run one seed or one estimator at a time (`--seeds 1 --estimators rloo`); a seed that fails does
not stop the next one. Writes OUT/table.md and OUT/table.json (which runs are missing, too); prints the table.
`--from_existing` rebuilds the table from OUT/seed_N/summary.json without running anything.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Dict, List

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _spread(values) -> Dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    return {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max())}


def table(summaries: Dict[int, dict], estimators: List[str]) -> Dict[str, dict]:
    """Per estimator, over the seeds that finished it: held-out accuracy (percent) after RL, sampled and greedy,
    and the sampled gain over the same seed's SFT model, in points, each as {mean, min, max}; RL seconds per run
    and per iteration (mean). An estimator no seed finished is left out."""
    rows = {}
    for name in estimators:
        runs = [(seed, s["accuracy_before"], s["estimators"][name]) for seed, s in summaries.items()
                if name in s.get("estimators", {})]  # fmt: skip
        if not runs:
            continue
        rows[name] = {
            "seeds": [seed for seed, _, _ in runs],
            "iterations": runs[0][2]["iterations"],
            "gain": _spread([100 * (r["accuracy_after"]["sampled"] - b["sampled"]) for _, b, r in runs]),
            "sampled_after": _spread([100 * r["accuracy_after"]["sampled"] for _, _, r in runs]),
            "greedy_after": _spread([100 * r["accuracy_after"]["greedy"] for _, _, r in runs]),
            "greedy_gain": _spread([100 * (r["accuracy_after"]["greedy"] - b["greedy"]) for _, b, r in runs]),
            "rl_seconds": float(np.mean([r["seconds"] for _, _, r in runs])),
            "seconds_per_iteration": float(np.mean([r["seconds"] / r["iterations"] for _, _, r in runs])),
        }
    return rows


def missing_runs(summaries: Dict[int, dict], seeds: List[int], estimators: List[str]) -> List[str]:
    """ "estimator seed N" for every requested run without a result (not run yet, cut short or failed)."""
    return [f"{name} seed {seed}" for seed in seeds for name in estimators
            if name not in summaries.get(seed, {}).get("estimators", {})]  # fmt: skip


def markdown(rows: Dict[str, dict], summaries: Dict[int, dict], missing: List[str] = ()) -> str:
    """The docs table: one row per estimator, mean [min, max] over its seeds."""

    def cell(d, sign=""):
        return f"{d['mean']:{sign}.1f} [{d['min']:{sign}.1f}, {d['max']:{sign}.1f}]"

    before = {seed: s["accuracy_before"] for seed, s in summaries.items()}
    lines = [
        "Held-out accuracy after SFT (the RL starting point, one SFT model per seed): "
        + "; ".join(
            f"seed {seed} sampled {100 * b['sampled']:.1f} %, greedy {100 * b['greedy']:.1f} %"
            for seed, b in before.items()
        )  # fmt: skip
        + ".",
        "",
        "| estimator | seeds | iterations | sampled gain, points | sampled after, % | greedy after, % "
        "| greedy gain, points | RL wall s per run (s/iter) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {', '.join(map(str, r['seeds']))} | {r['iterations']} | {cell(r['gain'], '+')} | "
            f"{cell(r['sampled_after'])} | {cell(r['greedy_after'])} | {cell(r['greedy_gain'], '+')} | "
            f"{r['rl_seconds']:.0f} ({r['seconds_per_iteration']:.2f}) |"
        )
    lines += ["", "Cells: mean [min, max] over the seeds listed."]
    if missing:
        lines.append(f"Not finished: {', '.join(missing)}.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--estimators", default="grpo,dr_grpo,rloo,gae")
    parser.add_argument("--output_dir", default=os.path.join(ROOT, "output", "arithmetic_estimators"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--from_existing", action="store_true", help="only rebuild the table from summaries")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    out = os.path.abspath(args.output_dir)
    summaries, failed = {}, []
    for (
        seed
    ) in seeds:  # seed-major: a cut-short comparison still has every estimator of the seeds it finished
        seed_dir = os.path.join(out, f"seed_{seed}")
        if not args.from_existing:
            cmd = [sys.executable, os.path.join(HERE, "run_demo.py"), "--seed", str(seed), "--estimators",
                   ",".join(estimators), "--output_dir", seed_dir] + (["--quick"] if args.quick else [])  # fmt: skip
            if (
                subprocess.run(cmd, cwd=ROOT).returncode != 0
            ):  # the finished runs are kept; go on to the next seed
                failed.append(seed)
        path = os.path.join(seed_dir, "summary.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                summaries[seed] = json.load(f)
    if failed:
        sys.stderr.write(f"[compare_estimators] seeds {failed} did not finish (logs in OUT/seed_N/logs/)\n")
    rows = table(summaries, estimators)
    missing = missing_runs(summaries, seeds, estimators)
    text = markdown(rows, summaries, missing)
    with open(os.path.join(out, "table.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(out, "table.json"), "w", encoding="utf-8") as f:
        json.dump({"estimators": rows, "missing": missing}, f, indent=2)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
