"""What every training entry point shares: input checks collected into one report, the packaged trainer defaults,
the device choice, per-rank logging and the distributed start, the MindSpore context.

The order a trainer command follows (train / sft / rm; a new algorithm's command slots in the same way):

    args, overrides = parser.parse_known_args(argv)       # build_parser(): the flags all trainers share
    dist = start(PROG, args.device_target, args.model_config, args.save_dir)   # device, msrun/rank table, logs
    inputs = Inputs()                                      # every check below appends, none stops
    config = load_trainer_config(inputs, SFTConfig, args.config, "sft", overrides)
    run, params = load_model_yaml(inputs, args.model_config) ...
    if inputs.problems: return inputs.report(PROG)         # all problems at once, exit code 2
    set_context(run, dist.device_target, config.seed)      # only now MindSpore builds anything

Only `MindRLHFError` (a user-fixable input problem) is caught and reported; any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import logging
import os
import sys
from typing import Any, Callable, Dict, List, Optional, Tuple

from mindrlhf.errors import MindRLHFError

logger = logging.getLogger("mindrlhf.train")

USAGE_ERROR = 2  # exit code for input problems, as argparse uses for a bad command line
DEFAULTS_PACKAGE = "mindrlhf.configs.defaults"


class Inputs:
    """Collects every user-fixable problem instead of stopping at the first (one report, exit code 2)."""

    def __init__(self) -> None:
        self.problems: List[str] = []

    def attempt(self, fn: Callable, *args, **kwargs) -> Any:
        """`fn(*args, **kwargs)`, or None after recording its MindRLHFError. Other exceptions propagate."""
        try:
            return fn(*args, **kwargs)
        except MindRLHFError as exc:
            self.problems.extend(getattr(exc, "problems", None) or [str(exc)])  # a YAML may have several
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
        return USAGE_ERROR


def fail(prog: str, exc: MindRLHFError) -> int:
    """Report one user error raised outside an `Inputs` collection, in the same form (exit code 2)."""
    inputs = Inputs()
    inputs.problems.append(str(exc))
    return inputs.report(prog)


def default_config_path(kind: str) -> str:
    """The packaged default trainer YAML `mindrlhf/configs/defaults/<kind>_config.yaml` (kind: ppo, sft, rm).

    Found with importlib.resources, so it is the installed package's copy wherever the command runs from (an
    editable checkout, `pip install .`, a wheel); `model_configs/<kind>_config.yaml` in the repository links to it.
    """
    resource = importlib.resources.files(DEFAULTS_PACKAGE).joinpath(f"{kind}_config.yaml")
    if not resource.is_file():  # a broken install, not a user input: say what is missing
        raise FileNotFoundError(f"the packaged default {resource} is missing; reinstall mindrlhf")
    return str(resource)


def build_parser(doc: str, kind: str, model_flags: bool = True) -> argparse.ArgumentParser:
    """The flags every trainer entry point shares (unknown `--key value` pairs become config overrides).

    `model_flags`: the one-model trainers' `--model_config`, `--dataset` and `--stop_at_step` (PPO names its
    models and dataset its own way)."""
    # allow_abbrev=False: `--mode lm` (an SFTConfig override) must not be taken as `--model_config lm`.
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    if model_flags:
        parser.add_argument(
            "--model_config", required=True, help="MindFormers run YAML (its checkpoint is the init)"
        )
        parser.add_argument("--dataset", required=True, help="MindRecord file written by rlhf_data.py")
    parser.add_argument(
        "--save_dir", required=True, help="output directory: logs, metrics, checkpoints, model"
    )
    parser.add_argument(
        "--config", default=None, help=f"trainer YAML (default: the packaged {kind}_config.yaml)"
    )
    parser.add_argument("--resume", default=None, help="continue the run saved in this directory")
    parser.add_argument(
        "--device_target", default=None, help="CPU, GPU or Ascend (default: the model YAML's context)"
    )
    parser.add_argument(
        "--print_config",
        action="store_true",
        help="print the resolved trainer config (YAML + overrides) as JSON and exit; nothing else is checked",
    )
    if model_flags:
        parser.add_argument(
            "--stop_at_step",
            type=int,
            default=None,
            help="save and stop after this many steps (the schedule still spans the whole run; continue with "
            "--resume)",
        )
    return parser


def load_trainer_config(inputs: Inputs, cls, path: Optional[str], kind: str, overrides: List[str]):
    """The trainer config: `path`, else the packaged default `<kind>_config.yaml`, then the overrides."""
    return inputs.attempt(cls.from_yaml, path or default_config_path(kind), overrides)


def print_config(prog: str, cls, path: Optional[str], kind: str, overrides: List[str]) -> int:
    """`--print_config`: the trainer config every later step would use, as JSON on stdout (exit 0), with the
    file it came from on stderr; a bad YAML or override is reported as usual (exit 2)."""
    inputs = Inputs()
    source = path or default_config_path(kind)
    config = load_trainer_config(inputs, cls, path, kind, overrides)
    if config is None:
        return inputs.report(prog)
    print(f"{prog}: trainer config from {source}" + (f" with {' '.join(overrides)}" if overrides else ""),
          file=sys.stderr)  # fmt: skip
    print(json.dumps(config.to_dict(), indent=1, sort_keys=True))
    return 0


def load_model_yaml(inputs: Inputs, path: str):
    """(run config, checkpoint params or None); the checkpoint is read once here and reused to build the model."""
    from mindrlhf.configs.run_config import load_run_config
    from mindrlhf.trainer.train_step import SCALE_SENSE, parse_loss_scale
    from mindrlhf.utils.checkpoint import drop_tied_head, read_checkpoint

    run = inputs.attempt(load_run_config, path)
    # A bad runner_wrapper.scale_sense is reported with the other problems, before anything is built.
    if run is not None:
        inputs.attempt(parse_loss_scale, run.section(SCALE_SENSE, {}), path)
    if run is None or run.checkpoint_path is None:
        return run, None
    params = inputs.attempt(read_checkpoint, run.checkpoint_path)
    if params is None:
        return run, None
    tied = run.model_config.tie_word_embeddings
    return run, inputs.attempt(drop_tied_head, params, tied, f"{run.checkpoint_path} (named by {path})")


def check_params(inputs: Inputs, run, params, expected: Dict[str, Tuple[int, ...]], flag_path: str):
    """`params` if its names and shapes are exactly `expected` (metadata entries aside), else None + a problem."""
    from mindrlhf.utils.checkpoint import META_PREFIX, check_compatible

    names = {n: tuple(v.shape) for n, v in params.items() if not n.startswith(META_PREFIX)}
    where = f"{run.checkpoint_path} (named by {flag_path})"
    ok = inputs.attempt(check_compatible, expected, names, where, True)
    return None if ok is None else params


def open_dataset(
    inputs: Inputs, path: str, kind: str, config, run, flag: str = "--dataset", shard: Optional[tuple] = None
):
    """Open and check a `kind` MindRecord (reader checks: file, sidecar, checksums, kind, schema) and check it
    against the run YAML (sequence length, vocabulary) and the batch size. `shard`: (num_shards, shard_id)
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


def check_resume(
    inputs: Inputs,
    resume: Optional[str],
    models: Optional[Dict[str, Any]] = None,
    optimizers: Tuple[str, ...] = (),
    state_keys: Tuple[str, ...] = (),
    kind: Optional[str] = None,
    config: Any = None,
    save_dir: Optional[str] = None,
) -> Optional[Dict[str, Any]]:
    """`--resume DIR` checked like every other input (`mindrlhf.utils.resume.resume_problems`): latest, every
    file present, readable, checksummed, shaped like `models` ({key: {name: shape} or None}); state.json; the
    config's changes against the saved one. A torn last line of SAVE_DIR's metrics file is dropped (warning).
    Returns the saved state (None when there is a problem or no --resume)."""
    if not resume:
        return None
    from mindrlhf.utils.metrics import repair_metrics
    from mindrlhf.utils.resume import resume_problems

    problems, state = resume_problems(
        resume, models or {}, optimizers, state_keys, kind, None if config is None else config.to_dict()
    )
    inputs.problems.extend(problems)
    if config is not None:  # the metrics file the resumed run appends to (cut back to the resumed step)
        damaged = repair_metrics(os.path.join(save_dir or resume, config.metrics_file))
        if damaged:
            inputs.problems.append(damaged)
    return None if problems else state


def start(prog: str, device_flag: Optional[str], model_yaml: str, save_dir: str):
    """Choose the device, start communication when launched by msrun or a rank table, then log per rank
    (rank 0 -> SAVE_DIR/train.log, rank r -> SAVE_DIR/train_rank{r}.log). Returns the DistributedInfo, or an
    exit code (int) after reporting a user error.

    Communication comes first: under msrun the scheduler process runs the command too and never returns from
    `init_distributed`, so it must not have written anything before."""
    from mindrlhf.cli.device import choose_device_target
    from mindrlhf.parallel import init_distributed
    from mindrlhf.utils.logging import setup_logging

    try:
        dist = init_distributed(choose_device_target(device_flag, model_yaml))
    except MindRLHFError as exc:
        return fail(prog, exc)
    log_name = "train.log" if dist.is_main else f"train_rank{dist.rank}.log"
    setup_logging(log_file=os.path.join(save_dir, log_name))
    if dist.is_main:  # a killed save's hidden temporaries (only of processes that no longer run)
        from mindrlhf.utils.run_state import remove_stale_temporaries

        remove_stale_temporaries(save_dir)
    if dist.world_size > 1:  # init_distributed logged it before the handlers existed
        logger.info(
            "rank %d of %d (%s, launched by %s)", dist.rank, dist.world_size, dist.backend, dist.launcher
        )
    return dist


def load_parallel(inputs: Inputs, runs: List[Any], dist, batch_size: int):
    """The first run YAML's parallel sections, checked against the launched world and every model in `runs`
    (global batch = world x batch_size). None after recording a problem."""
    from mindrlhf.parallel import ParallelConfig

    first = runs[0]
    parallel = inputs.attempt(ParallelConfig.from_run_dict, first.raw, first.path)
    if parallel is None:
        return None
    before = len(inputs.problems)
    for run in runs:
        c = run.model_config
        inputs.attempt(
            parallel.validate, dist.world_size, c.num_heads, c.n_kv_heads, c.num_layers,
            batch_size * dist.world_size, c.vocab_size, c.ffn_hidden_size,
        )  # fmt: skip
    return parallel if len(inputs.problems) == before else None


def shards_the_model(parallel, world_size: int) -> bool:
    """True when the layout splits the model (semi/auto/hybrid parallel): shard strategies must be applied."""
    from mindrlhf.parallel.config import DATA_PARALLEL, STAND_ALONE

    return world_size > 1 and parallel.use_parallel and parallel.mode not in (DATA_PARALLEL, STAND_ALONE)


def set_context(run, device_target: str, seed: int) -> None:
    """Execution mode from the run YAML's `context` (GRAPH unless it says `mode: 1`: the jitted steps run ~3x
    faster in GRAPH mode on CPU) and the seed. The device was set by `start` (MindSpore refuses a second
    `set_device` after communication init)."""
    import mindspore as ms

    mode = ms.PYNATIVE_MODE if run.section("context.mode", 0) == 1 else ms.GRAPH_MODE
    ms.set_context(mode=mode)
    ms.set_seed(seed)
    logger.info(
        "device %s, %s mode, seed %d",
        device_target,
        "PyNative" if mode == ms.PYNATIVE_MODE else "GRAPH",
        seed,
    )


def run_training(prog: str, trainer: Any, body: Callable[[], Any], save_dir: str) -> int:
    """Run `body()` (the training loop) with SIGINT/SIGTERM turned into a clean stop (`mindrlhf.utils.signals`).

    Exit codes: 0 done; 130/143 stopped by SIGINT/SIGTERM after a checkpoint (the message says how to resume);
    1 for a MindRLHFError raised while training (e.g. a full disk during a save: the message names the file
    and the last good checkpoint).
    """
    from mindrlhf.utils import signals

    signals.install()
    try:
        body()
    except MindRLHFError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    finally:
        signals.uninstall()
    if getattr(trainer, "stopped_by", None):
        print(
            f"{prog}: stopped by {trainer.stopped_by}; the checkpoint in {os.path.join(save_dir, 'checkpoints')} "
            f"continues the run: add --resume {save_dir}",
            file=sys.stderr,
        )
        return signals.exit_code() or 128 + 15
    return 0


def run_tool(prog: str, body: Callable[[], int]) -> int:
    """Run a non-training command's `body`; a MindRLHFError becomes one `error:` line and exit code 2."""
    try:
        return body()
    except MindRLHFError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR


def resume_and_train(prog: str, trainer: Any, args, eval_key: str, eval_name: str) -> int:
    """The RM and DPO commands' loop under `run_training`: `--resume`, train to `--stop_at_step`, then log the
    steps, the final held-out metric `eval_key` (as `eval_name`) and where the model is."""

    def fit() -> None:
        if args.resume:
            trainer.resume(args.resume)
        metrics = trainer.train(stop_at_step=args.stop_at_step)
        logger.info(
            "done: %d steps, held-out %s %.4f; model: %s", trainer.step, eval_name,
            metrics.get(eval_key, float("nan")), os.path.join(args.save_dir, "model.yaml"),
        )  # fmt: skip

    return run_training(prog, trainer, fit, args.save_dir)
