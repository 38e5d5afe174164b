"""Direct preference optimisation of the SFT model on comparison pairs, with held-out preference metrics.

    mindrlhf-dpo --model_config SFT_OUT/model.yaml --dataset RM.mindrecord --save_dir OUT \
        [--eval_dataset RM_EVAL.mindrecord] [--config DPO_CONFIG.yaml] [--resume OUT] [--stop_at_step N] \
        [--key value ...]
    (also: python -m mindrlhf.train_dpo ..., python -m mindrlhf.cli.dpo ...)

MODEL.yaml is the SFT model's MindFormers run YAML (what mindrlhf-sft writes); the checkpoint it names is both
the policy's initialisation and the frozen reference, so it must name one. RM.mindrecord is an `rm` dataset from
rlhf_data.py --mode rm (the reward model's pairs). Without --eval_dataset, `eval_fraction` of its rows (seeded)
are held out. The trainer YAML defaults to the packaged dpo_config.yaml (model_configs/dpo_config.yaml in the
repository); `--key value` overrides any DPOConfig field (`--beta 0.2 --loss_type ipo`).

OUT receives train.log, metrics.jsonl (loss, rewards/chosen, rewards/rejected, rewards/accuracies,
rewards/margins, logps/chosen, logps/rejected, grad_norm, lr per log interval, as TRL names them; eval/... per
evaluation), checkpoints/step_N/ (resumable: --resume OUT; --stop_at_step N saves and stops early) and, at the
end, model.ckpt + model.yaml: a causal-LM (SFT) model, what `train.py --sft_model_path` takes. One process only.
Every input is checked before anything is built; problems are reported together, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from mindrlhf.cli import common, pairs

PROG = "train_dpo"


def build_parser() -> argparse.ArgumentParser:
    parser = common.build_parser(__doc__, "dpo")
    parser.add_argument(
        "--eval_dataset", default=None, help="held-out rm MindRecord (default: eval_fraction split)"
    )
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args, overrides = build_parser().parse_known_args(argv)
    if args.print_config:
        from mindrlhf.configs.dpo_config import DPOConfig

        return common.print_config(PROG, DPOConfig, args.config, "dpo", overrides)
    dist = common.start(PROG, args.device_target, args.model_config, args.save_dir)
    if isinstance(dist, int):
        return dist
    from mindrlhf.configs.dpo_config import DPOConfig
    from mindrlhf.models.llama.model import llama_param_shapes

    inputs = common.Inputs()
    inputs.check(
        dist.world_size == 1,
        f"{dist.world_size} processes were launched ({dist.launcher}); DPO training runs on one process",
    )
    config = common.load_trainer_config(inputs, DPOConfig, args.config, "dpo", overrides)
    run, params = common.load_model_yaml(inputs, args.model_config)
    if run is not None and run.checkpoint_path is None:
        inputs.problems.append(
            f"{args.model_config} names no checkpoint: DPO starts from the SFT model, which is also the frozen "
            "reference; pass the model.yaml mindrlhf-sft wrote (or set its `load_checkpoint`)"
        )
    if run is not None and params is not None:
        params = common.check_params(
            inputs, run, params, llama_param_shapes(run.model_config), args.model_config
        )
    train_data, eval_data = pairs.open_pairs(inputs, args, config, run, "dpo")
    common.check_resume(inputs, args.resume)
    if inputs.problems:
        return inputs.report(PROG)
    return train(args, dist, config, run, params, train_data, eval_data)


def train(args, dist, config, run, params, train_data, eval_data) -> int:
    """Split off the held-out pairs, build policy and reference on the checked inputs and train."""
    from mindrlhf.models.llama.model import LlamaForCausalLM
    from mindrlhf.trainer.dpo_trainer import DPOTrainer, build_reference
    from mindrlhf.utils.checkpoint import load_param_dict

    common.set_context(run, dist.device_target, config.seed)
    train_rows, eval_rows = pairs.split_pairs(args, config, train_data, eval_data)
    if train_rows is None:
        train_rows = train_data.read_all()
    policy = LlamaForCausalLM(run.model_config)
    load_param_dict(policy, params, source=run.checkpoint_path, strict=True)
    # No local name for the reference: with precompute_ref_log_probs the trainer releases it after setup.
    trainer = DPOTrainer(
        config, policy, build_reference(run.model_config, params, run.checkpoint_path, config.loss_type),
        train_rows, eval_rows, args.save_dir, loss_scale=run.section("runner_wrapper.scale_sense", {}),
    )  # fmt: skip
    common.logger.info("policy and frozen reference initialised from %s", run.checkpoint_path)

    return common.resume_and_train(PROG, trainer, args, "eval/rewards/accuracies", "rewards/accuracies")


if __name__ == "__main__":
    sys.exit(main())
