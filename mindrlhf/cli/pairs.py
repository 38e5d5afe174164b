"""Comparison-pair datasets for the commands that train on them (reward model, DPO): open, check, split.

Both read an `rm` MindRecord (rlhf_data.py --mode rm) and hold out either `--eval_dataset` or a seeded
`eval_fraction` of the training pairs; the checks and the split are written once, here.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from mindrlhf.cli import common


def open_pairs(inputs: common.Inputs, args, config, run, kind: str) -> Tuple[Any, Any]:
    """(train dataset, eval dataset or None), each None when it cannot be opened (the problem is in `inputs`).

    Checks that the pairs left for training after `eval_fraction` fill a batch, and the learning-rate schedule
    against the batches per epoch (`kind` names the packaged default config when --config is not given).
    """
    from mindrlhf.trainer.rm_trainer import num_eval_rows

    if config is None:
        return None, None
    train_data = common.open_dataset(inputs, args.dataset, "rm", config, run)
    eval_data = None
    if args.eval_dataset:
        eval_data = common.open_dataset(inputs, args.eval_dataset, "rm", config, run, flag="--eval_dataset")
    if train_data is not None:
        n_train = train_data.num_rows
        if not args.eval_dataset and config.eval_fraction > 0:
            n_train -= num_eval_rows(train_data.num_rows, config.eval_fraction)
            inputs.check(
                n_train >= config.batch_size,
                f"{args.dataset}: {train_data.num_rows} pairs leave {n_train} for training after "
                f"eval_fraction={config.eval_fraction}, fewer than batch_size={config.batch_size}; lower one",
            )
        common.check_schedule(
            inputs, config, n_train // config.batch_size, args.config or common.default_config_path(kind)
        )
    return train_data, eval_data


def split_pairs(
    args, config, train_data, eval_data
) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
    """(train rows or None, held-out rows or None).

    The held-out rows are `--eval_dataset` (read into memory) when given, else a seeded `eval_fraction` of the
    training pairs; only then are the training pairs read into memory and returned (comparison sets are small).
    None for the train rows means "the whole training dataset", left for the caller to stream or read.
    """
    from mindrlhf.trainer.rm_trainer import split_rows

    if eval_data is not None:
        eval_rows = eval_data.read_all()
        common.logger.info("held-out pairs: %d from %s", len(eval_rows["chosen_ids"]), args.eval_dataset)
        return None, eval_rows
    if config.eval_fraction > 0:
        train_rows, eval_rows = split_rows(train_data.read_all(), config.eval_fraction, config.seed)
        common.logger.info(
            "held out %d of %d pairs of %s (eval_fraction=%g)", len(eval_rows["chosen_ids"]),
            train_data.num_rows, args.dataset, config.eval_fraction,
        )  # fmt: skip
        return train_rows, eval_rows
    common.logger.warning("no --eval_dataset and eval_fraction=0: no held-out metrics will be reported")
    return None, None
