"""`mindrlhf-plan-memory` (also `python -m mindrlhf.tools.plan_memory`): per-device memory of a PPO / GRPO run,
before launch, from the same inputs as train.py.

    mindrlhf-plan-memory --sft_model_path SFT.yaml [--reward_model_path RM.yaml] [--config PPO_CONFIG.yaml] \
        [--device_memory_gb 64] [--recompute none|selective|full] [--runtime_overhead_gb 0] [--json] [--key value ...]

`--key value` overrides any PPOConfig field, as in train.py (e.g. `--rollout_batch_size 16`); without --config
the packaged ppo_config.yaml is used (grpo_config.yaml for a critic-free `--advantage_estimator`). The layout
(dp, mp, pp, parallel optimizer) and `recompute_config` are the SFT YAML's. Exit 0 when the run fits, 1 when it
does not, 2 for a bad input (all problems listed). The formulas and assumptions: mindrlhf/tools/plan_memory.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from mindrlhf.cli import common
from mindrlhf.tools.plan_memory import RECOMPUTE_MODES

PROG = "mindrlhf-plan-memory"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument("--sft_model_path", required=True, help="MindFormers run YAML of the SFT model")
    parser.add_argument("--reward_model_path", default=None, help="run YAML of the reward model (optional)")
    parser.add_argument("--config", default=None, help="PPO/GRPO trainer YAML (default: the packaged one)")
    parser.add_argument(
        "--device_memory_gb", type=float, default=64.0, help="GiB per device (default 64: Ascend 910B)"
    )
    parser.add_argument(
        "--runtime_overhead_gb", type=float, default=0.0,
        help="GiB the framework takes besides the model (measured; CPU: bench/bench_memory_plan.py)",
    )  # fmt: skip
    parser.add_argument(
        "--recompute", choices=RECOMPUTE_MODES, default=None,
        help="activations to count toward the peak (default: the SFT YAML's recompute_config)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the plan as JSON instead of a table")
    parser.add_argument("--reward_funcs", nargs="+", default=None, help="as train.py (config field)")
    parser.add_argument("--reward_weights", nargs="+", type=float, default=None, help="as train.py")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args, overrides = build_parser().parse_known_args(argv)
    from mindrlhf.cli.train import config_overrides, default_kind
    from mindrlhf.configs.ppo_config import PPOConfig
    from mindrlhf.configs.run_config import load_run_config
    from mindrlhf.parallel.config import ParallelConfig
    from mindrlhf.tools.plan_memory import GIB, plan_from_runs

    inputs = common.Inputs()
    mapping = inputs.attempt(config_overrides, args, overrides)
    ppo = None
    if mapping is not None:
        config_path = args.config or common.default_config_path(default_kind(mapping))
        ppo = inputs.attempt(PPOConfig.from_yaml, config_path, mapping)
    sft = inputs.attempt(load_run_config, args.sft_model_path)  # the YAML only: no checkpoint is read
    reward = inputs.attempt(load_run_config, args.reward_model_path) if args.reward_model_path else None
    parallel = None if sft is None else inputs.attempt(ParallelConfig.from_run_dict, sft.raw, sft.path)
    if parallel is not None and parallel.use_parallel and ppo is not None:  # the layout train.py would accept
        world = parallel.dp * parallel.mp * parallel.pp
        for run in (r for r in (sft, reward) if r is not None):
            c = run.model_config
            inputs.attempt(
                parallel.validate, world, c.num_heads, c.n_kv_heads, c.num_layers,
                ppo.rollout_batch_size * world, c.vocab_size, c.ffn_hidden_size,
            )  # fmt: skip
    inputs.check(args.device_memory_gb > 0, f"--device_memory_gb must be > 0, got {args.device_memory_gb}")
    inputs.check(
        args.runtime_overhead_gb >= 0, f"--runtime_overhead_gb must be >= 0, got {args.runtime_overhead_gb}"
    )
    if inputs.problems:
        return inputs.report(PROG)
    plan = plan_from_runs(
        sft, ppo, reward, parallel, recompute=args.recompute,
        device_memory_gb=args.device_memory_gb, runtime_overhead=int(args.runtime_overhead_gb * GIB),
    )  # fmt: skip
    if args.json:
        print(json.dumps(plan.to_dict(), indent=1))
    else:
        print(
            f"{PROG}: {sft.path}" + (f" + {reward.path}" if reward else "") + f", {ppo.advantage_estimator}"
        )
        print(plan.table())
    return 0 if plan.fits else 1


if __name__ == "__main__":
    sys.exit(main())
