"""PPO-RLHF training entry point (one card, a CPU, or one rank of a distributed launch).

    python train.py --sft_model_path SFT.yaml --reward_model_path RM.yaml --dataset_dir DATA.mindrecord \
        --save_dir OUT [--config model_configs/ppo_config.yaml] [--resume OUT] [--device_target CPU] [--key value ...]

SFT.yaml / RM.yaml are MindFormers run YAMLs whose checkpoint field names the weights: the actor and the frozen
reference are built from SFT.yaml, the reward model and the critic (initialised from the reward model) from
RM.yaml. `--key value` overrides any PPOConfig field (e.g. `--num_iterations 10 --init_kl_coef 0.1`).
Every input is validated before any model is built; all problems are reported at once (exit code 2).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PPO_CONFIG = os.path.join(ROOT, "model_configs", "ppo_config.yaml")

logger = logging.getLogger("train")


def parse_args(argv: Optional[List[str]] = None) -> Tuple[argparse.Namespace, List[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--sft_model_path", required=True, help="MindFormers run YAML of the SFT model (actor, reference)")
    parser.add_argument("--reward_model_path", required=True, help="run YAML of the reward model (reward, critic)")
    parser.add_argument("--dataset_dir", required=True, help="PPO MindRecord file written by rlhf_data.py")
    parser.add_argument("--save_dir", required=True, help="output directory: metrics, logs, checkpoints")
    parser.add_argument("--config", default=DEFAULT_PPO_CONFIG, help="PPOConfig YAML")
    parser.add_argument("--resume", default=None, help="continue the run saved in this directory")
    parser.add_argument("--device_target", default=None, help="CPU, GPU or Ascend (default: the SFT YAML's context)")
    parser.add_argument("--stop_after", type=int, default=None, help="stop (with a checkpoint) after this many iterations")
    return parser.parse_known_args(argv)


def validate(args: argparse.Namespace, overrides: List[str]):
    """Check every input; return (problems, loaded) where loaded holds what later steps reuse."""
    from mindrlhf.configs.loader import ConfigError
    from mindrlhf.configs.ppo_config import PPOConfig
    from mindrlhf.configs.run_config import load_run_config
    from mindrlhf.data.schemas import DataError
    from mindrlhf.models.llama.model import llama_param_shapes
    from mindrlhf.models.roles import value_param_shapes
    from mindrlhf.utils.checkpoint import CheckpointError, check_compatible, read_checkpoint

    problems: List[str] = []
    loaded: Dict[str, object] = {}

    def attempt(fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except (ConfigError, CheckpointError, DataError, FileNotFoundError, ValueError) as exc:
            problems.append(str(exc))
            return None

    ppo = attempt(PPOConfig.from_yaml, args.config, overrides)
    runs = {}
    for role, path, shapes_of in (
        ("sft", args.sft_model_path, llama_param_shapes),
        ("reward", args.reward_model_path, value_param_shapes),
    ):
        run = attempt(load_run_config, path)
        runs[role] = run
        if run is None:
            continue
        ckpt = run.checkpoint_path
        if ckpt is None:
            logger.warning("%s names no checkpoint: the %s model starts from random weights", path, role)
            continue
        params = attempt(read_checkpoint, ckpt)
        if params is not None:
            names = {n: tuple(t.shape) for n, t in params.items() if not n.startswith("__meta__.")}
            ok = attempt(check_compatible, shapes_of(run.model_config), names, f"{ckpt} (named by {path})", True)
            if ok is not None:
                loaded[f"{role}_params"] = params

    dataset_info = attempt(_inspect_dataset, args.dataset_dir)
    if ppo is not None:
        for run in runs.values():
            if run is not None and run.model_config.seq_length < ppo.max_prompt_length + ppo.max_new_tokens:
                problems.append(
                    f"{run.path}: field 'model.model_config.seq_length'={run.model_config.seq_length} is shorter "
                    f"than max_prompt_length + max_new_tokens = {ppo.max_prompt_length + ppo.max_new_tokens} "
                    f"({args.config})"
                )
        if dataset_info is not None:
            p = dataset_info["lengths"].get("max_prompt_length")
            if p is not None and p != ppo.max_prompt_length:
                problems.append(
                    f"{args.dataset_dir}: prompts are {p} tokens but {args.config} has max_prompt_length="
                    f"{ppo.max_prompt_length}; pass --max_prompt_length {p} or rebuild the dataset"
                )
            rows = dataset_info["rows"]
            if rows < ppo.rollout_batch_size:
                problems.append(
                    f"{args.dataset_dir}: {rows} prompts, fewer than rollout_batch_size={ppo.rollout_batch_size}"
                )
    if runs.get("sft") is not None and runs.get("reward") is not None:
        a, b = runs["sft"].model_config, runs["reward"].model_config
        if a.vocab_size != b.vocab_size:
            problems.append(
                f"{args.reward_model_path}: vocab_size {b.vocab_size} differs from {args.sft_model_path}'s "
                f"{a.vocab_size}; the reward model must share the SFT tokenizer"
            )
    if args.resume and not os.path.isfile(os.path.join(args.resume, "checkpoints", "latest")):
        problems.append(f"--resume {args.resume}: no checkpoints/latest there (nothing to resume)")
    loaded.update(ppo=ppo, sft_run=runs.get("sft"), reward_run=runs.get("reward"), dataset=dataset_info)
    return problems, loaded


def _inspect_dataset(path: str):
    from mindrlhf.data.reader import read_dataset

    reader = read_dataset(path, "ppo", batch_size=1, shuffle=False)  # checks sidecar checksum and schema
    return {"lengths": reader.lengths, "rows": reader.num_rows}


def _device_target(args) -> str:
    """--device_target, else the SFT YAML's context.device_target, else CPU (read without validating)."""
    if args.device_target:
        return args.device_target
    try:
        from mindrlhf.configs.loader import load_yaml

        return str(load_yaml(args.sft_model_path).get("context", {}).get("device_target", "CPU"))
    except Exception:  # reported properly by validate()
        return "CPU"


def main(argv: Optional[List[str]] = None) -> int:
    args, overrides = parse_args(argv)
    from mindrlhf.configs.loader import ConfigError
    from mindrlhf.parallel.config import ParallelConfig
    from mindrlhf.parallel.runtime import DistributedEnvError, init_distributed, set_parallel_context
    from mindrlhf.utils.logging import setup_logging

    # Communication first: under msrun the scheduler process runs this script too and must stop here.
    try:
        dist = init_distributed(_device_target(args))
    except (ConfigError, DistributedEnvError) as exc:
        print(f"train.py: {exc}", file=sys.stderr)
        return 2
    log_name = "train.log" if dist.rank == 0 else f"train_rank{dist.rank}.log"  # as train_sft
    setup_logging(log_file=os.path.join(args.save_dir, log_name))
    if dist.world_size > 1:  # init_distributed logged before the handlers existed
        logger.info("rank %d of %d on %s (%s, %s)", dist.rank, dist.world_size, dist.device_target, dist.backend,
                    dist.launcher)
    problems, loaded = validate(args, overrides)
    ppo, sft_run, reward_run = loaded["ppo"], loaded["sft_run"], loaded["reward_run"]
    parallel = None
    if sft_run is not None and ppo is not None:
        try:
            parallel = ParallelConfig.from_run_dict(sft_run.raw, source=sft_run.path)
            if dist.world_size == 1:  # one card or a CPU: debug runs reuse cluster YAMLs, parallel_config unused
                logger.info("single process: %s's parallel_config is not used", sft_run.path)
            for run in (sft_run, reward_run) if dist.world_size > 1 else ():
                if run is not None:
                    c = run.model_config
                    parallel.validate(dist.world_size, c.num_heads, c.n_kv_heads, c.num_layers,
                                      ppo.rollout_batch_size * dist.world_size, c.vocab_size, c.ffn_hidden_size)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        print(f"train.py: {len(problems)} problem(s) with the inputs, nothing was started:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 2

    import mindspore as ms

    from mindrlhf.models.roles import build_from_run_config, freeze
    from mindrlhf.parallel.apply import apply_layout
    from mindrlhf.parallel.config import SHARDING_MODES
    from mindrlhf.parallel.shard import llama_layout_from_config
    from mindrlhf.trainer.ppo_trainer import PPOTrainer, PromptBatches

    set_parallel_context(parallel, dist.world_size)
    # GRAPH mode unless the YAML asks for PyNative (context.mode: 1): jitted steps run ~3x faster in it on CPU.
    ms.set_context(mode=ms.PYNATIVE_MODE if sft_run.section("context.mode", 0) == 1 else ms.GRAPH_MODE)
    ms.set_seed(ppo.seed)
    actor = build_from_run_config(sft_run, "causal_lm", params=loaded.get("sft_params"))
    reference = freeze(build_from_run_config(sft_run, "causal_lm", params=loaded.get("sft_params")))
    reward = freeze(build_from_run_config(reward_run, "value", params=loaded.get("reward_params")))
    critic = build_from_run_config(reward_run, "value", params=loaded.get("reward_params"))
    if dist.world_size > 1 and parallel.mode in SHARDING_MODES:  # tensor/pipeline parallel on Ascend/GPU (refused on CPU above)
        layout = llama_layout_from_config(parallel, sft_run.model_config.num_layers)
        for role in (actor, reference, reward, critic):
            apply_layout(role, layout)
    # Data parallel: each rank samples rollout_batch_size prompts of its own shard (global batch = world x that).
    shard = parallel.dataset_shard(dist.rank, dist.world_size)
    dataset = PromptBatches(
        args.dataset_dir, batch_size=ppo.rollout_batch_size, seed=ppo.seed,
        num_shards=shard[0] if shard else None, shard_id=shard[1] if shard else None,
    )
    cfg = sft_run.model_config
    trainer = PPOTrainer(
        ppo, actor, critic, reference, reward, dataset,
        eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id, save_dir=args.save_dir,
        loss_scale=sft_run.section("runner_wrapper.scale_sense", {}), is_main=dist.rank == 0,
    )
    if args.resume:
        trainer.resume(args.resume)
    metrics = trainer.train(stop_after=args.stop_after)
    logger.info("done: %d iterations, last mean score %.4f, KL %.4f; outputs in %s",
                trainer.iteration, metrics.get("env/score_mean", float("nan")),
                metrics.get("objective/kl", float("nan")), args.save_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
