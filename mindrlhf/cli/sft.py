"""Supervised fine-tuning (or language-model pre-training) of a Llama2 causal LM.

    mindrlhf-sft --model_config MODEL.yaml --dataset SFT.mindrecord --save_dir OUT \
        [--config SFT_CONFIG.yaml] [--resume OUT] [--stop_at_step N] [--device_target CPU] [--key value ...]
    (also: python -m mindrlhf.train_sft ..., python -m mindrlhf.cli.sft ...)

MODEL.yaml is a MindFormers run YAML; the checkpoint it names (if any) is the initialisation, otherwise the model
starts from random weights (seeded). SFT.mindrecord is an `sft` dataset from rlhf_data.py --mode sft.
The trainer YAML defaults to the packaged sft_config.yaml (model_configs/sft_config.yaml in the repository);
`--key value` overrides any SFTConfig field (`--mode lm --max_steps 2000 --learning_rate 1e-3`).

OUT receives train.log, metrics.jsonl, checkpoints/step_N/ + checkpoints/latest (resumable: --resume OUT;
--stop_at_step N saves and stops early, the schedule unchanged) and, at the end, model.ckpt + model.yaml: the
YAML is what `train.py --sft_model_path` (and mindrlhf-rm's --model_config) take. Runs in GRAPH mode unless the
model YAML's context says `mode: 1`.
Every input is checked before anything is built; problems are reported together, exit code 2.

Data parallel (CPU: mccl, GPU: nccl, Ascend: hccl), launched by msrun with a model YAML that has
`use_parallel: true`, `parallel.parallel_mode: 0` and `parallel_config.data_parallel: N`:

    msrun --worker_num=2 --local_worker_num=2 --master_port=8118 --log_dir=OUT/msrun_log --join=True \
        mindrlhf/train_sft.py --model_config MODEL_DP.yaml --dataset SFT.mindrecord --save_dir OUT [--key value]

`--batch_size` is per rank (global batch = N x batch_size); rank r reads shard r of each epoch's order, so the
N ranks together read exactly the rows a single process with batch N x batch_size reads in the same step.
Rank 0 writes OUT as above (train.log); rank r > 0 logs to OUT/train_rank{r}.log only. `--save_rank_weights`
(a debugging aid) makes every rank also write its final weights to OUT/rank_{r}/model.ckpt.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from mindrlhf.cli import common

PROG = "train_sft"


def build_parser() -> argparse.ArgumentParser:
    parser = common.build_parser(__doc__, "sft")
    parser.add_argument(
        "--save_rank_weights",
        action="store_true",
        help="debugging data parallel: every rank also writes its final weights to SAVE_DIR/rank_<r>/model.ckpt",
    )
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args, overrides = build_parser().parse_known_args(argv)
    if args.print_config:
        from mindrlhf.configs.train_config import SFTConfig

        return common.print_config(PROG, SFTConfig, args.config, "sft", overrides)
    dist = common.start(PROG, args.device_target, args.model_config, args.save_dir)
    if isinstance(dist, int):
        return dist
    from mindrlhf.configs.train_config import SFTConfig
    from mindrlhf.models.llama.model import llama_param_shapes

    inputs = common.Inputs()
    config = common.load_trainer_config(inputs, SFTConfig, args.config, "sft", overrides)
    run, params = common.load_model_yaml(inputs, args.model_config)
    if run is not None and params is not None:
        params = common.check_params(
            inputs, run, params, llama_param_shapes(run.model_config), args.model_config
        )
    parallel = None
    if run is not None and config is not None:
        parallel = common.load_parallel(inputs, [run], dist, config.batch_size)
    shard = parallel.dataset_shard(dist.rank, dist.world_size) if parallel else None
    batches = None
    if config is not None:
        batches = common.open_dataset(inputs, args.dataset, "sft", config, run, shard=shard)
    if batches is not None:
        common.check_schedule(inputs, config, len(batches), args.config or common.default_config_path("sft"))
    common.check_resume(
        inputs, args.resume, {"model": None if run is None else llama_param_shapes(run.model_config)},
        ("model",), ("train_step",), "sft", config, args.save_dir,
    )  # fmt: skip
    if inputs.problems:
        return inputs.report(PROG)
    return train(args, dist, config, run, params, parallel, batches)


def train(args, dist, config, run, params, parallel, batches) -> int:
    """Build the model on the checked inputs and train it (nothing here validates: main() did)."""
    from mindrlhf.models.llama.model import LlamaForCausalLM
    from mindrlhf.parallel import set_parallel_context
    from mindrlhf.trainer.sft_trainer import SFTTrainer
    from mindrlhf.utils.checkpoint import load_param_dict, save_checkpoint

    common.set_context(run, dist.device_target, config.seed)
    # Before the trainer: TrainStep and SFTLoss read it (gradient reducer, global token mean).
    set_parallel_context(parallel, dist.world_size)
    model = LlamaForCausalLM(run.model_config)
    if params is not None:
        load_param_dict(model, params, source=run.checkpoint_path, strict=True)
        common.logger.info("initialised from %s", run.checkpoint_path)
    else:
        common.logger.warning(
            "%s names no checkpoint: training starts from random weights (seed %d)", run.path, config.seed
        )
    trainer = SFTTrainer(
        config, model, batches, args.save_dir, loss_scale=run.section("runner_wrapper.scale_sense", {}),
        is_main=dist.is_main,
    )  # fmt: skip

    def run() -> None:
        if args.resume:
            trainer.resume(args.resume)
        metrics = trainer.train(stop_at_step=args.stop_at_step)
        if args.save_rank_weights:
            path = save_checkpoint(model, os.path.join(args.save_dir, f"rank_{dist.rank}", "model.ckpt"))
            common.logger.info("rank %d wrote its weights to %s (--save_rank_weights)", dist.rank, path)
        common.logger.info(
            "done: %d steps, last loss %.4f; model: %s", trainer.step, metrics.get("sft/loss", float("nan")),
            os.path.join(args.save_dir, "model.yaml"),
        )  # fmt: skip

    return common.run_training(PROG, trainer, run, args.save_dir)


if __name__ == "__main__":
    sys.exit(main())
