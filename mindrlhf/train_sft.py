"""Supervised fine-tuning (or language-model pre-training) of a Llama2 causal LM.

    python -m mindrlhf.train_sft --model_config MODEL.yaml --dataset SFT.mindrecord --save_dir OUT \
        [--config model_configs/sft_config.yaml] [--resume OUT] [--stop_at_step N] [--device_target CPU] \
        [--key value ...]

MODEL.yaml is a MindFormers run YAML; the checkpoint it names (if any) is the initialisation, otherwise the model
starts from random weights (seeded). SFT.mindrecord is an `sft` dataset from rlhf_data.py --mode sft.
`--key value` overrides any SFTConfig field (`--mode lm --max_steps 2000 --learning_rate 1e-3`).

OUT receives train.log, metrics.jsonl, checkpoints/step_N/ + checkpoints/latest (resumable: --resume OUT;
--stop_at_step N saves and stops early, the schedule unchanged) and, at the end, model.ckpt + model.yaml: the
YAML is what `train.py --sft_model_path` (and train_rm's --model_config) take. Runs in GRAPH mode unless the
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
import logging
import os
import sys
from typing import Any, Callable, List, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_SFT_CONFIG = os.path.join(ROOT, "model_configs", "sft_config.yaml")

logger = logging.getLogger("mindrlhf.train")


def build_parser(doc: str, default_config: str) -> argparse.ArgumentParser:
    """The flags every trainer entry point shares (unknown `--key value` pairs become config overrides)."""
    # allow_abbrev=False: `--mode lm` (an SFTConfig override) must not be taken as `--model_config lm`.
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument(
        "--model_config", required=True, help="MindFormers run YAML (its checkpoint is the init)"
    )
    parser.add_argument("--dataset", required=True, help="MindRecord file written by rlhf_data.py")
    parser.add_argument(
        "--save_dir", required=True, help="output directory: logs, metrics, checkpoints, model"
    )
    parser.add_argument(
        "--config", default=None, help=f"trainer YAML (default {os.path.relpath(default_config, ROOT)})"
    )
    parser.add_argument("--resume", default=None, help="continue the run saved in this directory")
    parser.add_argument(
        "--device_target", default=None, help="CPU, GPU or Ascend (default: the model YAML's context)"
    )
    parser.add_argument(
        "--stop_at_step",
        type=int,
        default=None,
        help="save and stop after this many steps (the schedule still spans the whole run; continue with --resume)",
    )
    return parser


class Inputs:
    """Collects every user-fixable problem instead of stopping at the first (one report, exit code 2)."""

    def __init__(self) -> None:
        self.problems: List[str] = []

    def attempt(self, fn: Callable, *args, **kwargs) -> Any:
        from mindrlhf.configs.loader import ConfigError
        from mindrlhf.utils.checkpoint import CheckpointError

        try:
            return fn(*args, **kwargs)
        except (ConfigError, CheckpointError, FileNotFoundError, ValueError) as exc:
            self.problems.append(str(exc))
            return None

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.problems.append(message)

    def report(self, prog: str) -> int:
        print(
            f"{prog}: {len(self.problems)} problem(s) with the inputs, nothing was started:", file=sys.stderr
        )
        for problem in self.problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2


def load_trainer_config(inputs: Inputs, cls, path: Optional[str], default: str, overrides: List[str]):
    """The trainer config: `path`, else the repository default when it exists, else the dataclass defaults."""
    if path is None and os.path.isfile(default):
        path = default
    return inputs.attempt(cls.from_yaml, path, overrides)


def load_model_yaml(inputs: Inputs, path: str):
    """(run config, checkpoint params or None); the checkpoint is read once here and reused to build the model."""
    from mindrlhf.configs.run_config import load_run_config
    from mindrlhf.utils.checkpoint import read_checkpoint

    run = inputs.attempt(load_run_config, path)
    if run is None or run.checkpoint_path is None:
        return run, None
    return run, inputs.attempt(read_checkpoint, run.checkpoint_path)


def open_dataset(
    inputs: Inputs, path: str, kind: str, config, run, flag: str = "--dataset", shard: Optional[tuple] = None
):
    """Open and check a `kind` MindRecord (reader checks: file, sidecar, checksums, kind, schema) and check it
    against the model YAML (sequence length, vocabulary) and the batch size. `shard`: (num_shards, shard_id)
    to read one data-parallel rank's slice (`ParallelConfig.dataset_shard`), None for every row."""
    from mindrlhf.data.reader import read_dataset

    num_shards, shard_id = shard if shard else (None, None)
    batches = inputs.attempt(
        read_dataset, path, kind, batch_size=config.batch_size, shuffle=config.shuffle, seed=config.seed,
        num_shards=num_shards, shard_id=shard_id,
    )  # fmt: skip
    if batches is None or run is None:
        return batches
    model, field = run.model_config, "model.model_config"
    seq = batches.lengths.get("seq_length")
    inputs.check(
        seq is None or seq <= model.seq_length,
        f"{path}: rows are {seq} tokens but {run.path} has {field}.seq_length={model.seq_length}; raise it to "
        f"at least {seq} or rebuild the dataset with --seq_length {model.seq_length}",
    )
    vocab = ((batches.meta or {}).get("tokenizer") or {}).get("vocab_size")
    inputs.check(
        vocab is None or vocab <= model.vocab_size,
        f"{path}: its tokenizer has {vocab} pieces but {run.path} has {field}.vocab_size={model.vocab_size}; "
        f"set vocab_size to {vocab} (or the tokenizer the dataset was built with)",
    )
    if flag == "--dataset":
        inputs.check(
            len(batches) >= 1,
            f"{path}: {batches.num_rows} rows"
            + (f" ({batches.num_rows // num_shards} per rank over {num_shards} ranks)" if num_shards else "")
            + f", fewer than batch_size={config.batch_size}; pass a smaller --batch_size",
        )
    return batches


def check_schedule(inputs: Inputs, config, batches_per_epoch: int, source: str) -> None:
    """warmup_steps must fit in the run, whose length is known only once the data is open."""
    total = config.total_steps(batches_per_epoch)
    inputs.check(
        batches_per_epoch < 1 or config.warmup_steps <= total,
        f"{source}: field 'warmup_steps'={config.warmup_steps} is longer than the run ({total} steps = "
        + ("max_steps" if config.max_steps else f"epochs {config.epochs} x {batches_per_epoch} batches")
        + "); lower it or train longer",
    )


def check_resume(inputs: Inputs, resume: Optional[str]) -> None:
    if resume:
        inputs.check(
            os.path.isfile(os.path.join(resume, "checkpoints", "latest")),
            f"--resume {resume}: no checkpoints/latest there (nothing to resume; was it a save_dir of this trainer?)",
        )


def device_target_of(args) -> str:
    """--device_target, else the model YAML's context.device_target, else CPU (read before validation, which
    reports a bad YAML properly)."""
    if args.device_target:
        return args.device_target
    try:
        from mindrlhf.configs.loader import load_yaml

        return str((load_yaml(args.model_config).get("context") or {}).get("device_target", "CPU"))
    except Exception:
        return "CPU"


def load_parallel(inputs: Inputs, run, dist, batch_size: int):
    """The model YAML's parallel sections, checked against the launched world (global batch = world x batch)."""
    from mindrlhf.parallel.config import ParallelConfig

    parallel = inputs.attempt(ParallelConfig.from_run_dict, run.raw, run.path)
    if parallel is None:
        return None
    before, c = len(inputs.problems), run.model_config
    inputs.attempt(
        parallel.validate, dist.world_size, c.num_heads, c.n_kv_heads, c.num_layers,
        batch_size * dist.world_size, c.vocab_size, c.ffn_hidden_size,
    )  # fmt: skip
    return parallel if len(inputs.problems) == before else None


def set_context(run, device_target: Optional[str], seed: int, set_device: bool = True) -> None:
    """Device and execution mode from the model YAML's `context` (GRAPH mode unless it says `mode: 1`):
    the jitted TrainStep runs ~3x faster in GRAPH mode than under PyNative on CPU. `set_device=False` when
    `init_distributed` has set it already (MindSpore refuses a second `set_device` after communication init)."""
    import mindspore as ms

    from mindrlhf.parallel.runtime import normalize_device_target

    target = normalize_device_target(device_target or run.section("context.device_target", "CPU"))
    mode = ms.PYNATIVE_MODE if run.section("context.mode", 0) == 1 else ms.GRAPH_MODE
    ms.set_context(mode=mode)
    if set_device:
        ms.set_device(target)
    ms.set_seed(seed)
    logger.info(
        "device %s, %s mode, seed %d", target, "PyNative" if mode == ms.PYNATIVE_MODE else "GRAPH", seed
    )


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser(__doc__, DEFAULT_SFT_CONFIG)
    parser.add_argument(
        "--save_rank_weights",
        action="store_true",
        help="debugging data parallel: every rank also writes its final weights to SAVE_DIR/rank_<r>/model.ckpt",
    )
    args, overrides = parser.parse_known_args(argv)
    from mindrlhf.configs.loader import ConfigError
    from mindrlhf.configs.train_config import SFTConfig
    from mindrlhf.parallel.runtime import DistributedEnvError, init_distributed, set_parallel_context
    from mindrlhf.utils.logging import setup_logging

    # Communication first: under msrun the scheduler process runs this module too and must stop here, before
    # it writes anything.
    try:
        dist = init_distributed(device_target_of(args))
    except (ConfigError, DistributedEnvError) as exc:
        print(f"train_sft: {exc}", file=sys.stderr)
        return 2
    log_name = "train.log" if dist.is_main else f"train_rank{dist.rank}.log"
    setup_logging(log_file=os.path.join(args.save_dir, log_name))
    if dist.world_size > 1:  # init_distributed logged it before logging was set up
        logger.info(
            "rank %d of %d (%s, launched by %s)", dist.rank, dist.world_size, dist.backend, dist.launcher
        )
    inputs = Inputs()
    config = load_trainer_config(inputs, SFTConfig, args.config, DEFAULT_SFT_CONFIG, overrides)
    run, params = load_model_yaml(inputs, args.model_config)
    if run is not None and params is not None:
        from mindrlhf.models.llama.model import llama_param_shapes
        from mindrlhf.utils.checkpoint import META_PREFIX, check_compatible

        names = {n: tuple(v.shape) for n, v in params.items() if not n.startswith(META_PREFIX)}
        where = f"{run.checkpoint_path} (named by {args.model_config})"
        if inputs.attempt(check_compatible, llama_param_shapes(run.model_config), names, where, True) is None:
            params = None
    parallel = None
    if run is not None and config is not None:
        parallel = load_parallel(inputs, run, dist, config.batch_size)
    shard = parallel.dataset_shard(dist.rank, dist.world_size) if parallel else None
    batches = None
    if config is not None:
        batches = open_dataset(inputs, args.dataset, "sft", config, run, shard=shard)
    if batches is not None:
        check_schedule(inputs, config, len(batches), args.config or DEFAULT_SFT_CONFIG)
    check_resume(inputs, args.resume)
    if inputs.problems:
        return inputs.report("train_sft")

    from mindrlhf.models.llama.model import LlamaForCausalLM
    from mindrlhf.trainer.sft_trainer import SFTTrainer
    from mindrlhf.utils.checkpoint import load_param_dict

    set_context(run, dist.device_target, config.seed, set_device=False)
    # Before the trainer: TrainStep and SFTLoss read it (gradient reducer, global token mean).
    set_parallel_context(parallel, dist.world_size)
    model = LlamaForCausalLM(run.model_config)
    if params is not None:
        load_param_dict(model, params, source=run.checkpoint_path, strict=True)
        logger.info("initialised from %s", run.checkpoint_path)
    else:
        logger.warning(
            "%s names no checkpoint: training starts from random weights (seed %d)", run.path, config.seed
        )
    trainer = SFTTrainer(
        config, model, batches, args.save_dir, loss_scale=run.section("runner_wrapper.scale_sense", {}),
        is_main=dist.is_main,
    )  # fmt: skip
    if args.resume:
        trainer.resume(args.resume)
    metrics = trainer.train(stop_at_step=args.stop_at_step)
    if args.save_rank_weights:
        from mindrlhf.utils.checkpoint import save_checkpoint

        path = save_checkpoint(model, os.path.join(args.save_dir, f"rank_{dist.rank}", "model.ckpt"))
        logger.info("rank %d wrote its weights to %s (--save_rank_weights)", dist.rank, path)
    logger.info(
        "done: %d steps, last loss %.4f; model: %s", trainer.step, metrics.get("sft/loss", float("nan")),
        os.path.join(args.save_dir, "model.yaml"),
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
