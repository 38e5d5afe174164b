"""Reward-model training on comparison pairs (chosen vs rejected), with held-out pairwise accuracy.

    mindrlhf-rm --model_config SFT_OUT/model.yaml --dataset RM.mindrecord --save_dir OUT \
        [--eval_dataset RM_EVAL.mindrecord] [--config RM_CONFIG.yaml] [--resume OUT] [--key value ...]
    (also: python -m mindrlhf.train_rm ..., python -m mindrlhf.cli.rm ...)

MODEL.yaml is a MindFormers run YAML. The checkpoint it names initialises the reward model: a causal-LM (SFT)
checkpoint gives the backbone `model.*` (lm_head dropped, v_head zero-initialised), a reward checkpoint
(`v_head.weight` present) loads strictly, none means random weights. RM.mindrecord is an `rm` dataset from
rlhf_data.py --mode rm. Without --eval_dataset, `eval_fraction` of its rows (seeded) are held out.
The trainer YAML defaults to the packaged rm_config.yaml (model_configs/rm_config.yaml in the repository).

OUT receives train.log, metrics.jsonl (rm/* per log interval, eval/* per evaluation), checkpoints/step_N/ and,
at the end, model.ckpt (`model.*` + `v_head.weight`) + model.yaml, which is what `train.py --reward_model_path`
takes (the critic is initialised from it too). One process only. Bad inputs: one report, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from mindrlhf.cli import common, pairs

PROG = "train_rm"


def build_parser() -> argparse.ArgumentParser:
    parser = common.build_parser(__doc__, "rm")
    parser.add_argument(
        "--eval_dataset", default=None, help="held-out rm MindRecord (default: eval_fraction split)"
    )
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args, overrides = build_parser().parse_known_args(argv)
    if args.print_config:
        from mindrlhf.configs.train_config import RMConfig

        return common.print_config(PROG, RMConfig, args.config, "rm", overrides)
    dist = common.start(PROG, args.device_target, args.model_config, args.save_dir)
    if isinstance(dist, int):
        return dist
    from mindrlhf.configs.train_config import RMConfig
    from mindrlhf.trainer.rm_trainer import reward_init_params

    inputs = common.Inputs()
    inputs.check(
        dist.world_size == 1,
        f"{dist.world_size} processes were launched ({dist.launcher}); reward-model training runs on one process",
    )
    config = common.load_trainer_config(inputs, RMConfig, args.config, "rm", overrides)
    run, params = common.load_model_yaml(inputs, args.model_config)
    if run is not None and params is not None:
        where = f"{run.checkpoint_path} (named by {args.model_config})"
        if inputs.attempt(reward_init_params, params, run.model_config, where) is None:
            params = None
    train_data, eval_data = pairs.open_pairs(inputs, args, config, run, "rm")
    from mindrlhf.models.roles import value_param_shapes

    common.check_resume(
        inputs, args.resume, {"model": None if run is None else value_param_shapes(run.model_config)},
        ("model",), ("train_step",), "rm", config, args.save_dir,
    )  # fmt: skip
    if inputs.problems:
        return inputs.report(PROG)
    return train(args, dist, config, run, params, train_data, eval_data)


def train(args, dist, config, run, params, train_data, eval_data) -> int:
    """Split off the held-out pairs, build the reward model on the checked inputs and train it."""
    from mindrlhf.trainer.rm_trainer import ArrayBatches, RMTrainer, build_reward_model

    common.set_context(run, dist.device_target, config.seed)
    train_rows, eval_rows = pairs.split_pairs(args, config, train_data, eval_data)
    if train_rows is not None:
        train_data = ArrayBatches(train_rows, config.batch_size, config.shuffle, config.seed)
    model = build_reward_model(run.model_config, params, run.checkpoint_path or run.path)
    trainer = RMTrainer(
        config,
        model,
        train_data,
        eval_rows,
        args.save_dir,
        loss_scale=run.section("runner_wrapper.scale_sense", {}),
    )

    return common.resume_and_train(PROG, trainer, args, "eval/accuracy", "accuracy")


if __name__ == "__main__":
    sys.exit(main())
