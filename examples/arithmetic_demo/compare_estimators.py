"""The estimator table for docs/: GRPO vs Dr. GRPO vs RLOO vs PPO (gae) on the arithmetic task, same budget,
several seeds, mean and spread of the held-out accuracy gain.

    python examples/arithmetic_demo/compare_estimators.py [--seeds 0,1,2] [--estimators grpo,dr_grpo,rloo,gae] \
        [--output_dir output/arithmetic_estimators] [--quick]

Each seed is one `run_demo.py --seed N --estimators ...` (SFT once per seed, then every estimator from the same
SFT model, so the estimators differ only in the RL stage). Writes OUT/table.md and OUT/table.json; prints the table.
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


def table(summaries: Dict[int, dict], estimators: List[str]) -> Dict[str, dict]:
    """Per estimator: the held-out accuracy after RL and the gain over SFT, in points, across seeds."""
    rows = {}
    for name in estimators:
        runs = [
            (s["accuracy_before"], s["estimators"][name])
            for s in summaries.values()
            if name in s.get("estimators", {})
        ]
        if not runs:
            continue
        gain = np.array([100 * (r["accuracy_after"]["sampled"] - b["sampled"]) for b, r in runs])
        after = np.array([100 * r["accuracy_after"]["sampled"] for _, r in runs])
        greedy = np.array([100 * r["accuracy_after"]["greedy"] for _, r in runs])
        seconds = np.array([r["seconds"] for _, r in runs])
        rows[name] = {
            "seeds": len(runs),
            "gain_mean": float(gain.mean()), "gain_min": float(gain.min()), "gain_max": float(gain.max()),
            "sampled_after_mean": float(after.mean()), "greedy_after_mean": float(greedy.mean()),
            "rl_seconds_mean": float(seconds.mean()), "iterations": runs[0][1]["iterations"],
        }  # fmt: skip
    return rows


def markdown(rows: Dict[str, dict], summaries: Dict[int, dict]) -> str:
    before = [100 * s["accuracy_before"]["sampled"] for s in summaries.values()]
    lines = [
        f"Held-out sampled accuracy after SFT: {np.mean(before):.1f} % (seeds {', '.join(map(str, summaries))}: "
        + ", ".join(f"{b:.1f}" for b in before)
        + ").",
        "",
        "| estimator | seeds | iterations | gain, points (mean [min, max]) | sampled after | greedy after | RL s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['seeds']} | {r['iterations']} | {r['gain_mean']:+.1f} [{r['gain_min']:+.1f}, "
            f"{r['gain_max']:+.1f}] | {r['sampled_after_mean']:.1f} % | {r['greedy_after_mean']:.1f} % | "
            f"{r['rl_seconds_mean']:.0f} |"
        )
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
    text = markdown(rows, summaries)
    with open(os.path.join(out, "table.md"), "w", encoding="utf-8") as f:
        f.write(text)
    with open(os.path.join(out, "table.json"), "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=2)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
