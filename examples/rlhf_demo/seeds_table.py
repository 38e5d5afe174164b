"""The before/after table of several demo runs (one summary.json per seed), with mean and spread, for docs/demo.md.

    python examples/rlhf_demo/seeds_table.py output/demo_seed0/summary.json output/demo_seed1/summary.json ...

Prints a markdown table: per seed, PPO's and DPO's refusal and helpful rates before -> after (sampled, greedy),
then the mean and the spread (max - min) of each column over the seeds.
"""

from __future__ import annotations

import json
import sys
from typing import Dict, List

import numpy as np

COLUMNS = (
    ("refusal_rate_before", "refusal SFT"),
    ("refusal_rate_after", "refusal after"),
    ("helpful_rate_before", "helpful SFT"),
    ("helpful_rate_after", "helpful after"),
    ("greedy.refusal_rate_before", "refusal SFT greedy"),
    ("greedy.refusal_rate_after", "refusal after greedy"),
    ("greedy.helpful_rate_before", "helpful SFT greedy"),
    ("greedy.helpful_rate_after", "helpful after greedy"),
)


def _get(d: Dict, key: str) -> float:
    for part in key.split("."):
        d = d[part]
    return float(d)


def table(summaries: List[Dict], seeds: List[str]) -> str:
    lines = [
        "| seed | policy | " + " | ".join(title for _, title in COLUMNS) + " | RM acc | wall s |",
        "| --- | --- |" + " --- |" * (len(COLUMNS) + 2),
    ]
    for policy in ("ppo", "dpo"):
        values = []
        for seed, s in zip(seeds, summaries):
            d = s if policy == "ppo" else s.get("dpo")
            if d is None:
                continue
            row = [_get(d, k) for k, _ in COLUMNS]
            values.append(row)
            lines.append(
                f"| {seed} | {policy} | "
                + " | ".join(f"{v:.3f}" for v in row)
                + f" | {s['rm_accuracy']:.3f} | {s['wall_seconds']:.0f} |"
            )
        if len(values) > 1:
            arr = np.array(values)
            lines.append(f"| mean | {policy} | " + " | ".join(f"{v:.3f}" for v in arr.mean(0)) + " | | |")
            lines.append(
                f"| spread (max-min) | {policy} | "
                + " | ".join(f"{v:.3f}" for v in np.ptp(arr, 0))
                + " | | |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    paths = list(sys.argv[1:] if argv is None else argv)
    if not paths:
        raise SystemExit("usage: seeds_table.py SUMMARY.json [SUMMARY.json ...]")
    summaries = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            summaries.append(json.load(f))
    seeds = [str(s.get("seed", i)) for i, s in enumerate(summaries)]
    print(table(summaries, seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
