"""PPO-RLHF training entry point (one card, a CPU, or one rank of a distributed launch).

    python train.py --sft_model_path SFT.yaml --reward_model_path RM.yaml --dataset_dir DATA.mindrecord \
        --save_dir OUT [--config PPO_CONFIG.yaml] [--resume OUT] [--device_target CPU] [--key value ...]
    (also: mindrlhf-train ..., python -m mindrlhf.cli.train ...)

SFT.yaml / RM.yaml are MindFormers run YAMLs whose checkpoint field names the weights: the actor and the frozen
reference are built from SFT.yaml, the reward model and the critic (initialised from the reward model) from
RM.yaml. The trainer YAML defaults to the packaged ppo_config.yaml (model_configs/ppo_config.yaml in the
repository); `--key value` overrides any PPOConfig field (e.g. `--num_iterations 10 --init_kl_coef 0.1`).
Every input is validated before any model is built; all problems are reported at once (exit code 2).
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Optional, Tuple

from mindrlhf.cli import common

PROG = "train.py"


def build_parser() -> argparse.ArgumentParser:
    parser = common.build_parser(__doc__, "ppo", model_flags=False)
    parser.add_argument(
        "--sft_model_path", required=True, help="MindFormers run YAML of the SFT model (actor, reference)"
    )
    parser.add_argument(
        "--reward_model_path", required=True, help="run YAML of the reward model (reward, critic)"
    )
    parser.add_argument("--dataset_dir", required=True, help="PPO MindRecord file written by rlhf_data.py")
    parser.add_argument(
        "--stop_after", type=int, default=None, help="stop (with a checkpoint) after this many iterations"
    )
    return parser


def parse_args(argv: Optional[List[str]] = None) -> Tuple[argparse.Namespace, List[str]]:
    return build_parser().parse_known_args(argv)


def validate(inputs: common.Inputs, args: argparse.Namespace, overrides: List[str]) -> Dict[str, object]:
    """Check every input, recording problems in `inputs`; return what later steps reuse (configs, weights)."""
    from mindrlhf.configs.ppo_config import PPOConfig
    from mindrlhf.models.llama.model import llama_param_shapes
    from mindrlhf.models.roles import value_param_shapes

    config_path = args.config or common.default_config_path("ppo")
    ppo = inputs.attempt(PPOConfig.from_yaml, config_path, overrides)
    loaded: Dict[str, object] = {}
    runs = {}
    for role, path, shapes_of in (
        ("sft", args.sft_model_path, llama_param_shapes),
        ("reward", args.reward_model_path, value_param_shapes),
    ):
        run, params = common.load_model_yaml(inputs, path)
        runs[role] = run
        if run is not None and run.checkpoint_path is None:
            common.logger.warning(
                "%s names no checkpoint: the %s model starts from random weights", path, role
            )
        if run is not None and params is not None:
            loaded[f"{role}_params"] = common.check_params(
                inputs, run, params, shapes_of(run.model_config), path
            )

    dataset_info = inputs.attempt(_inspect_dataset, args.dataset_dir)
    if ppo is not None:
        for run in runs.values():
            if run is not None and run.model_config.seq_length < ppo.max_prompt_length + ppo.max_new_tokens:
                inputs.problems.append(
                    f"{run.path}: field 'model.model_config.seq_length'={run.model_config.seq_length} is shorter "
                    f"than max_prompt_length + max_new_tokens = {ppo.max_prompt_length + ppo.max_new_tokens} "
                    f"({config_path})"
                )
        if dataset_info is not None:
            p = dataset_info["lengths"].get("max_prompt_length")
            inputs.check(
                p is None or p == ppo.max_prompt_length,
                f"{args.dataset_dir}: prompts are {p} tokens but {config_path} has max_prompt_length="
                f"{ppo.max_prompt_length}; pass --max_prompt_length {p} or rebuild the dataset",
            )
            rows = dataset_info["rows"]
            inputs.check(
                rows >= ppo.rollout_batch_size,
                f"{args.dataset_dir}: {rows} prompts, fewer than rollout_batch_size={ppo.rollout_batch_size}",
            )
    if runs["sft"] is not None and runs["reward"] is not None:
        a, b = runs["sft"].model_config, runs["reward"].model_config
        inputs.check(
            a.vocab_size == b.vocab_size,
            f"{args.reward_model_path}: vocab_size {b.vocab_size} differs from {args.sft_model_path}'s "
            f"{a.vocab_size}; the reward model must share the SFT tokenizer",
        )
    _check_resume(inputs, args, ppo, runs)
    loaded.update(ppo=ppo, sft_run=runs["sft"], reward_run=runs["reward"], dataset=dataset_info)
    return loaded


def _check_resume(inputs: common.Inputs, args: argparse.Namespace, ppo, runs) -> None:
    """--resume: files, checksums, shapes against both run YAMLs, state.json, the config changes."""
    from mindrlhf.models.llama.model import llama_param_shapes
    from mindrlhf.models.roles import value_param_shapes

    sft, reward = runs["sft"], runs["reward"]
    models = {
        "actor": None if sft is None else llama_param_shapes(sft.model_config),
        "critic": None if reward is None else value_param_shapes(reward.model_config),
    }
    state = common.check_resume(
        inputs, args.resume, models, ("actor", "critic"),
        ("kl_controller", "score_normalizer", "actor_step", "critic_step"), "ppo", ppo, args.save_dir,
    )  # fmt: skip
    if state is not None and ppo is not None:
        inputs.check(
            state["step"] <= ppo.num_iterations,
            f"--resume {args.resume}: the run is at iteration {state['step']}, past num_iterations="
            f"{ppo.num_iterations}; pass --num_iterations {state['step']} or more",
        )


def _inspect_dataset(path: str):
    from mindrlhf.data.reader import read_dataset

    reader = read_dataset(path, "ppo", batch_size=1, shuffle=False)  # checks sidecar checksum and schema
    return {"lengths": reader.lengths, "rows": reader.num_rows}


def main(argv: Optional[List[str]] = None) -> int:
    args, overrides = parse_args(argv)
    if args.print_config:
        from mindrlhf.configs.ppo_config import PPOConfig

        return common.print_config(PROG, PPOConfig, args.config, "ppo", overrides)
    dist = common.start(PROG, args.device_target, args.sft_model_path, args.save_dir)
    if isinstance(dist, int):
        return dist
    inputs = common.Inputs()
    loaded = validate(inputs, args, overrides)
    ppo, sft_run, reward_run = loaded["ppo"], loaded["sft_run"], loaded["reward_run"]
    parallel = None
    if sft_run is not None and ppo is not None:
        if dist.world_size == 1:  # one card or a CPU: debug runs reuse cluster YAMLs, parallel_config unused
            from mindrlhf.parallel import ParallelConfig

            parallel = inputs.attempt(ParallelConfig.from_run_dict, sft_run.raw, sft_run.path)
            common.logger.info("single process: %s's parallel_config is not used", sft_run.path)
        else:
            runs = [r for r in (sft_run, reward_run) if r is not None]
            parallel = common.load_parallel(inputs, runs, dist, ppo.rollout_batch_size)
    if inputs.problems:
        return inputs.report(PROG)
    return train(args, dist, loaded, parallel)


def train(args, dist, loaded, parallel) -> int:
    """Build the four models on the checked inputs and run PPO."""
    from mindrlhf.models.roles import build_from_run_config, freeze
    from mindrlhf.parallel import set_parallel_context
    from mindrlhf.parallel.apply import apply_layout
    from mindrlhf.parallel.shard import llama_layout_from_config
    from mindrlhf.trainer.ppo_trainer import PPOTrainer, PromptBatches

    ppo, sft_run, reward_run = loaded["ppo"], loaded["sft_run"], loaded["reward_run"]
    set_parallel_context(parallel, dist.world_size)
    common.set_context(sft_run, dist.device_target, ppo.seed)
    actor = build_from_run_config(sft_run, "causal_lm", params=loaded.get("sft_params"))
    reference = freeze(build_from_run_config(sft_run, "causal_lm", params=loaded.get("sft_params")))
    reward = freeze(build_from_run_config(reward_run, "value", params=loaded.get("reward_params")))
    critic = build_from_run_config(reward_run, "value", params=loaded.get("reward_params"))
    if common.shards_the_model(parallel, dist.world_size):  # tensor/pipeline parallel (refused on CPU above)
        layout = llama_layout_from_config(parallel, sft_run.model_config.num_layers)
        for role in (actor, reference, reward, critic):
            apply_layout(role, layout)
    # Data parallel: each rank samples rollout_batch_size prompts of its own shard (global batch = world x that).
    shard = parallel.dataset_shard(dist.rank, dist.world_size)
    dataset = PromptBatches(
        args.dataset_dir, batch_size=ppo.rollout_batch_size, seed=ppo.seed,
        num_shards=shard[0] if shard else None, shard_id=shard[1] if shard else None,
    )  # fmt: skip
    cfg = sft_run.model_config
    trainer = PPOTrainer(
        ppo, actor, critic, reference, reward, dataset,
        eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id, save_dir=args.save_dir,
        loss_scale=sft_run.section("runner_wrapper.scale_sense", {}), is_main=dist.is_main,
    )  # fmt: skip

    def run() -> None:
        if args.resume:
            trainer.resume(args.resume)
        metrics = trainer.train(stop_after=args.stop_after)
        common.logger.info(
            "done: %d iterations, last mean score %.4f, KL %.4f; outputs in %s", trainer.iteration,
            metrics.get("env/score_mean", float("nan")), metrics.get("objective/kl", float("nan")), args.save_dir,
        )  # fmt: skip

    return common.run_training(PROG, trainer, run, args.save_dir)


if __name__ == "__main__":
    sys.exit(main())
