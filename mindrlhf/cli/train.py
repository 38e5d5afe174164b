"""RLHF training entry point: PPO, or critic-free GRPO / Dr. GRPO / RLOO (one card, a CPU, or one rank).

    python train.py --sft_model_path SFT.yaml --reward_model_path RM.yaml --dataset_dir DATA.mindrecord \
        --save_dir OUT [--config PPO_CONFIG.yaml] [--resume OUT] [--device_target CPU] [--key value ...]
    python train.py --sft_model_path SFT.yaml --dataset_dir PROMPTS.mindrecord --save_dir OUT \
        --config grpo_config.yaml --reward_funcs mindrlhf.rewards:accuracy [--tokenizer tok.model]
    (also: mindrlhf-train ..., python -m mindrlhf.cli.train ...)

SFT.yaml / RM.yaml are MindFormers run YAMLs whose checkpoint field names the weights: the actor and the frozen
reference (built only when a KL uses it: beta > 0 or init_kl_coef > 0) from SFT.yaml, the reward model from
RM.yaml. `advantage_estimator` (config) picks the algorithm: "gae" (PPO) also builds a critic, initialised from
RM.yaml, or, without a reward model (reward functions only), from the SFT backbone with a zero value head;
"grpo", "dr_grpo", "rloo" build no critic. The reward is the reward model's score and/or the weighted reward
functions (`--reward_funcs pkg.mod:fn ...`, `--reward_weights w ...`), which read responses decoded with
`--tokenizer` (default: the tokenizer recorded in the dataset's .meta.json) and the dataset's string columns.
The trainer YAML defaults to the packaged ppo_config.yaml (grpo_config.yaml for GRPO); `--key value`
overrides any PPOConfig field (e.g. `--num_iterations 10 --advantage_estimator rloo`).
Every input is validated before any model is built; all problems are reported at once (exit code 2).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Tuple

from mindrlhf.cli import common
from mindrlhf.utils.compile_cache import DEFAULT_ROOT, use_compile_cache

PROG = "train.py"


def build_parser() -> argparse.ArgumentParser:
    parser = common.build_parser(__doc__, "ppo", model_flags=False)
    parser.add_argument(
        "--sft_model_path", required=True, help="MindFormers run YAML of the SFT model (actor, reference)"
    )
    parser.add_argument(
        "--reward_model_path",
        default=None,
        help="run YAML of the reward model (reward; the gae critic starts from it); optional with --reward_funcs",
    )
    parser.add_argument(
        "--dataset_dir",
        required=True,
        help="PPO or prompt MindRecord written by rlhf_data.py (--mode ppo|prompt)",
    )
    parser.add_argument(
        "--reward_funcs",
        nargs="+",
        default=None,
        help="reward functions 'package.module:function' (config field)",
    )
    parser.add_argument(
        "--reward_weights", nargs="+", type=float, default=None, help="one weight per function"
    )
    parser.add_argument(
        "--tokenizer", default=None, help="SentencePiece model (or dir) to decode responses for reward functions "
        "(default: the one in the dataset's .meta.json)",
    )  # fmt: skip
    parser.add_argument(
        "--stop_after", type=int, default=None, help="stop (with a checkpoint) after this many iterations"
    )
    parser.add_argument(
        "--compile_cache",
        default=os.environ.get("MINDRLHF_COMPILE_CACHE", DEFAULT_ROOT),
        help=f"MindSpore compile cache root (default $MINDRLHF_COMPILE_CACHE or {DEFAULT_ROOT}; 'off' disables): a "
        "later run with the same configs and code loads its compiled graphs instead of compiling them",
    )
    return parser


def parse_args(argv: Optional[List[str]] = None) -> Tuple[argparse.Namespace, List[str]]:
    return build_parser().parse_known_args(argv)


def config_overrides(args: argparse.Namespace, overrides: List[str]):
    """`--key value` overrides plus the list flags (`--reward_funcs a:b c:d`) as one mapping for from_yaml."""
    from mindrlhf.configs.loader import parse_overrides

    out: Dict[str, object] = dict(parse_overrides(overrides))
    if args.reward_funcs is not None:
        out["reward_funcs"] = list(args.reward_funcs)
    if args.reward_weights is not None:
        out["reward_weights"] = list(args.reward_weights)
    return out


def default_kind(mapping) -> str:
    """The packaged trainer YAML to start from without --config: grpo_config.yaml for a critic-free estimator
    given on the command line, else ppo_config.yaml."""
    estimator = (mapping or {}).get("advantage_estimator", "gae")
    return "ppo" if estimator in ("gae", None) else "grpo"


def validate(inputs: common.Inputs, args: argparse.Namespace, overrides: List[str]) -> Dict[str, object]:
    """Check every input, recording problems in `inputs`; return what later steps reuse (configs, weights)."""
    from mindrlhf.configs.ppo_config import PPOConfig
    from mindrlhf.models.llama.model import llama_param_shapes
    from mindrlhf.models.roles import value_param_shapes

    mapping = inputs.attempt(config_overrides, args, overrides)
    config_path = args.config or common.default_config_path(default_kind(mapping))
    ppo = inputs.attempt(PPOConfig.from_yaml, config_path, mapping) if mapping is not None else None
    loaded: Dict[str, object] = {}
    runs = {"reward": None}
    for role, path, shapes_of in (
        ("sft", args.sft_model_path, llama_param_shapes),
        ("reward", args.reward_model_path, value_param_shapes),
    ):
        if path is None:
            continue
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
            rows, prompts = dataset_info["rows"], ppo.prompts_per_iteration
            inputs.check(
                rows >= prompts,
                f"{args.dataset_dir}: {rows} prompts, fewer than the {prompts} an iteration reads "
                f"(rollout_batch_size={ppo.rollout_batch_size} / num_generations={ppo.num_generations})",
            )
        loaded["tokenizer"] = _check_rewards(inputs, args, ppo, config_path, dataset_info)
    if runs.get("sft") is not None and runs["reward"] is not None:
        a, b = runs["sft"].model_config, runs["reward"].model_config
        inputs.check(
            a.vocab_size == b.vocab_size,
            f"{args.reward_model_path}: vocab_size {b.vocab_size} differs from {args.sft_model_path}'s "
            f"{a.vocab_size}; the reward model must share the SFT tokenizer",
        )
    _check_resume(inputs, args, ppo, runs)
    loaded.update(ppo=ppo, sft_run=runs.get("sft"), reward_run=runs["reward"], dataset=dataset_info)
    return loaded


def _check_resume(inputs: common.Inputs, args: argparse.Namespace, ppo, runs) -> None:
    """--resume: files, checksums, shapes against both run YAMLs, state.json, the config changes."""
    from mindrlhf.models.llama.model import llama_param_shapes
    from mindrlhf.models.roles import value_param_shapes

    sft, reward = runs.get("sft"), runs.get("reward")
    models = {"actor": None if sft is None else llama_param_shapes(sft.model_config)}
    roles, steps = ("actor",), ("kl_controller", "score_normalizer", "actor_step")
    if ppo is None or not ppo.critic_free:  # gae: the critic (from the reward YAML, else the SFT backbone)
        critic_run = reward if reward is not None else sft
        models["critic"] = None if critic_run is None else value_param_shapes(critic_run.model_config)
        roles, steps = roles + ("critic",), steps + ("critic_step",)
    state = common.check_resume(inputs, args.resume, models, roles, steps, "ppo", ppo, args.save_dir)
    if state is not None and ppo is not None:
        inputs.check(
            state["step"] <= ppo.num_iterations,
            f"--resume {args.resume}: the run is at iteration {state['step']}, past num_iterations="
            f"{ppo.num_iterations}; pass --num_iterations {state['step']} or more",
        )


def _check_rewards(inputs: common.Inputs, args, ppo, config_path: str, dataset_info):
    """The reward side (issue 16): a reward source exists, reward functions import and find their dataset columns,
    the tokenizer that decodes responses for them loads, the dataset suits the estimator. Returns the tokenizer."""
    from mindrlhf.rewards import load_reward_funcs, required_columns

    has_rm = args.reward_model_path is not None
    inputs.check(
        has_rm or ppo.reward_funcs,
        f"no reward: give --reward_model_path or reward_funcs (--reward_funcs mindrlhf.rewards:accuracy, or in "
        f"{config_path})",
    )
    inputs.check(
        has_rm or ppo.missing_eos_penalty is None,
        "missing_eos_penalty applies to the reward-model score (TRL's semantics) but no --reward_model_path is "
        "given; remove it",
    )
    funcs = inputs.attempt(load_reward_funcs, ppo.reward_funcs) if ppo.reward_funcs else []
    if dataset_info is None:
        return None
    kind, columns = dataset_info["kind"], dataset_info["string_columns"]
    inputs.check(
        kind == "prompt" or ppo.num_generations == 1 or ppo.ptx_coef == 0,
        f"{args.dataset_dir}: ptx_coef > 0 with num_generations > 1 would repeat the ptx text; set one of them",
    )
    inputs.check(
        kind == "ppo" or ppo.ptx_coef == 0,
        f"{args.dataset_dir}: a prompt dataset carries no ptx text but ptx_coef={ppo.ptx_coef}; set --ptx_coef 0",
    )
    for spec, func in zip(ppo.reward_funcs, funcs or []):
        for column in required_columns(func):
            inputs.check(
                column in columns,
                f"{args.dataset_dir}: reward function {spec!r} needs the dataset column {column!r}, but the "
                f"dataset has {sorted(columns) or 'no string columns'}; rebuild it with rlhf_data.py --mode prompt "
                f"from JSONL lines that carry {column!r}",
            )
    if not ppo.reward_funcs:
        return None
    path = args.tokenizer or dataset_info["tokenizer"]
    if path is None:
        inputs.problems.append(
            f"reward_funcs decode responses with a tokenizer, but {args.dataset_dir}'s metadata names none; "
            "pass --tokenizer PATH (the SentencePiece model the dataset was built with)"
        )
        return None
    from mindrlhf.data.tokenizer import LlamaTokenizer

    return inputs.attempt(LlamaTokenizer.from_pretrained, path, dataset_info["pad_token_id"])


def _inspect_dataset(path: str):
    from mindrlhf.data.reader import load_meta, read_dataset
    from mindrlhf.data.schemas import DataError

    if not os.path.isfile(path):
        raise DataError("dataset file not found", path)
    kind = load_meta(path).get("kind")
    if kind not in ("ppo", "prompt"):
        raise DataError(
            f"is a {kind!r} dataset, not 'ppo' or 'prompt' (RL training reads prompts); give a dataset written by "
            "rlhf_data.py --mode ppo or --mode prompt",
            path,
            "kind",
        )
    reader = read_dataset(path, kind, batch_size=1, shuffle=False)  # checks sidecar checksum and schema
    tokenizer = (reader.meta or {}).get("tokenizer") or {}
    return {
        "kind": kind, "lengths": reader.lengths, "rows": reader.num_rows, "string_columns": reader.string_columns,
        "tokenizer": tokenizer.get("path"), "pad_token_id": int((reader.meta or {}).get("pad_token_id", 0)),
    }  # fmt: skip


def main(argv: Optional[List[str]] = None) -> int:
    args, overrides = parse_args(argv)
    if args.print_config:
        from mindrlhf.configs.ppo_config import PPOConfig

        inputs = common.Inputs()
        mapping = inputs.attempt(config_overrides, args, overrides)
        if mapping is None:
            return inputs.report(PROG)
        return common.print_config(PROG, PPOConfig, args.config, default_kind(mapping), mapping)
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
    from mindrlhf.tools.plan_memory import device_memory_gb, plan_from_runs

    plan = plan_from_runs(sft_run, ppo, reward_run, parallel, dist.world_size,
                          device_memory_gb=device_memory_gb(dist.device_target))  # fmt: skip
    common.logger.info(
        "memory plan (mindrlhf-plan-memory; on CPU add MindSpore's runtime):\n%s", plan.table()
    )
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
    use_compile_cache(args.compile_cache, {
        "ppo": ppo.to_dict(), "sft": sft_run.raw, "reward": reward_run.raw if reward_run else None,
        "world": dist.world_size, "rank": dist.rank, "device": dist.device_target, "parallel": repr(parallel),
    })  # fmt: skip
    sft_params = loaded.get("sft_params")
    actor = build_from_run_config(sft_run, "causal_lm", params=sft_params)
    reference = reward = critic = None  # built only when used
    if ppo.needs_reference:
        reference = freeze(build_from_run_config(sft_run, "causal_lm", params=sft_params))
    if reward_run is not None:
        reward = freeze(build_from_run_config(reward_run, "value", params=loaded.get("reward_params")))
    if not ppo.critic_free:
        critic = _build_critic(sft_run, reward_run, sft_params, loaded.get("reward_params"))
    if common.shards_the_model(parallel, dist.world_size):  # tensor/pipeline parallel (refused on CPU above)
        cfg = sft_run.model_config
        layout = llama_layout_from_config(parallel, cfg.num_layers, cfg.qkv_has_bias)
        for role in (actor, reference, reward, critic):
            if role is not None:
                apply_layout(role, layout)
    # Data parallel: each rank samples rollout_batch_size prompts of its own shard (global batch = world x that).
    shard = parallel.dataset_shard(dist.rank, dist.world_size)
    dataset = PromptBatches(
        args.dataset_dir, batch_size=ppo.prompts_per_iteration, seed=ppo.seed,
        num_shards=shard[0] if shard else None, shard_id=shard[1] if shard else None,
    )  # fmt: skip
    cfg = sft_run.model_config
    trainer = PPOTrainer(
        ppo, actor, critic, reference, reward, dataset,
        eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id, save_dir=args.save_dir,
        loss_scale=sft_run.section("runner_wrapper.scale_sense", {}), is_main=dist.is_main,
        tokenizer=loaded.get("tokenizer"),
    )  # fmt: skip

    def run() -> None:
        if args.resume:
            trainer.resume(args.resume)
        metrics = trainer.train(stop_after=args.stop_after)
        kl = metrics.get("objective/kl")  # absent without a reference model (beta = init_kl_coef = 0)
        common.logger.info(
            "done: %d iterations, last mean score %.4f%s; outputs in %s", trainer.iteration,
            metrics.get("env/score_mean", float("nan")), "" if kl is None else f", KL {kl:.4f}", args.save_dir,
        )  # fmt: skip

    return common.run_training(PROG, trainer, run, args.save_dir)


def _build_critic(sft_run, reward_run, sft_params, reward_params):
    """The gae critic: the reward model's weights, or without one the SFT backbone with a zero value head."""
    from mindrlhf.models.roles import build_from_run_config

    if reward_run is not None:
        return build_from_run_config(reward_run, "value", params=reward_params)
    from mindrlhf.utils.checkpoint import read_checkpoint

    if sft_params is None and sft_run.checkpoint_path:
        sft_params = read_checkpoint(sft_run.checkpoint_path)
    backbone = None if sft_params is None else {k: v for k, v in sft_params.items() if k.startswith("model.")}
    common.logger.info("no reward model: the critic starts from %s's backbone, value head 0", sft_run.path)
    return build_from_run_config(sft_run, "value", params=backbone, strict=False)


if __name__ == "__main__":
    sys.exit(main())
