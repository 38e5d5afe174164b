"""Reward-model training on comparison pairs: loss = -log sigmoid(r_chosen - r_rejected) (Ouyang et al. 2022, eq. 1).

    for step in range(start, total_steps):
        1. batch     B pairs (chosen_ids, chosen_mask, rejected_ids, rejected_mask), fixed shape
        2. update    chosen and rejected concatenated into one batch of 2B, one forward; scores read at the
                     last real token (EOS); pairwise loss; jitted TrainStep
        3. log       loss, training accuracy, margin r_c - r_r
        4. evaluate  pairwise accuracy on the held-out pairs (every eval_interval steps and at the end)
        5. save      resumable run state; export model.ckpt (`model.*` + `v_head.weight`) and model.yaml

The reward model is a `ValueModel` (backbone + `v_head.weight [1, H]`), the class the critic also uses, so the
exported checkpoint loads strictly as either. It starts from a causal-LM (SFT) checkpoint, whose `lm_head` is
dropped and whose `v_head` is zero-initialised, from a reward checkpoint, or from random weights.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, mint, nn, ops

from mindrlhf.configs.train_config import RMConfig
from mindrlhf.models.llama.config import LlamaConfig
from mindrlhf.models.roles import ValueModel, value_param_shapes
from mindrlhf.trainer.sft_trainer import SupervisedTrainer
from mindrlhf.utils.checkpoint import META_PREFIX, check_compatible, load_param_dict

logger = logging.getLogger(__name__)

RM_FIELDS = ("chosen_ids", "chosen_mask", "rejected_ids", "rejected_mask")


def pairwise_loss(chosen_scores: Tensor, rejected_scores: Tensor) -> Tensor:
    """mean(-log sigmoid(r_c - r_r)) over `[B]` scores, as the stable softplus max(-d, 0) + log1p(exp(-|d|))."""
    d = chosen_scores - rejected_scores
    return mint.mean(mint.clamp(-d, min=0.0) + mint.log1p(mint.exp(-mint.abs(d))))


class PairwiseLoss(nn.Cell):
    """Pairwise loss of a ValueModel; metrics `[len(METRICS)]`: accuracy, mean margin, mean r_chosen, r_rejected.

    Inputs `[B, T]` int32; chosen and rejected go through the model as one `[2B, T]` batch (one forward).
    Accuracy counts r_c > r_r strictly (a tie is not a correct ranking). Data parallel needs no global mean here:
    every rank holds B pairs, so TrainStep's mean of the per-rank means is the mean over the global batch.
    """

    METRICS = ("accuracy", "margin", "chosen_score", "rejected_score")

    def __init__(self, model: nn.Cell):
        super().__init__(auto_prefix=False)
        self.model = model

    def construct(self, chosen_ids, chosen_mask, rejected_ids, rejected_mask):
        b = chosen_ids.shape[0]
        ids = ops.cat((chosen_ids, rejected_ids), 0)  # (2B, T)
        mask = ops.cat((chosen_mask, rejected_mask), 0)
        scores = self.model.score(ids, mask)  # (2B,)
        chosen, rejected = scores[:b], scores[b:]
        loss = pairwise_loss(chosen, rejected)
        margin = ops.stop_gradient(chosen - rejected)
        accuracy = (margin > 0).astype(ms.float32).mean()
        metrics = ops.stack(
            [accuracy, margin.mean(), ops.stop_gradient(chosen).mean(), ops.stop_gradient(rejected).mean()]
        )
        return loss, metrics


class PairScores(nn.Cell):
    """Evaluation forward (compiled once): (r_chosen `[B]`, r_rejected `[B]`) from one `[2B, T]` forward."""

    def __init__(self, model: nn.Cell):
        super().__init__(auto_prefix=False)
        self.model = model

    @ms.jit
    def construct(self, chosen_ids, chosen_mask, rejected_ids, rejected_mask):
        b = chosen_ids.shape[0]
        scores = self.model.score(
            ops.cat((chosen_ids, rejected_ids), 0), ops.cat((chosen_mask, rejected_mask), 0)
        )
        return scores[:b], scores[b:]


class PairwiseEvaluator:
    """`evaluator()` -> {"eval/accuracy", "eval/loss", "eval/margin", "eval/pairs"} over all held-out pairs.

    Pairs go in fixed batches of `batch_size` (one compiled shape); the last batch is padded with copies of the
    first rows and the padding is dropped before any metric is computed.
    """

    def __init__(self, model: nn.Cell, rows: Mapping[str, np.ndarray], batch_size: int):
        self.scores = PairScores(model)
        self.rows = {k: np.asarray(rows[k], np.int32) for k in RM_FIELDS}
        self.n = len(self.rows["chosen_ids"])
        self.batch_size = min(int(batch_size), self.n)

    def __call__(self) -> Dict[str, float]:
        b = self.batch_size
        padded = -(-self.n // b) * b
        idx = np.arange(padded) % self.n
        chosen, rejected = [], []
        for start in range(0, padded, b):
            part = idx[start : start + b]
            c, r = self.scores(*(Tensor(self.rows[k][part]) for k in RM_FIELDS))
            chosen.append(c.asnumpy())
            rejected.append(r.asnumpy())
        margin = (np.concatenate(chosen) - np.concatenate(rejected))[: self.n].astype(np.float64)
        return {
            "eval/accuracy": float((margin > 0).mean()),
            "eval/loss": float(np.logaddexp(0.0, -margin).mean()),
            "eval/margin": float(margin.mean()),
            "eval/pairs": float(self.n),
        }


class ArrayBatches:
    """In-memory rows `{field: [N, L]}` with the reader's order rule: epoch e visits
    `RandomState(seed + e).permutation(N)` (file order without shuffle), trimmed to whole batches."""

    def __init__(self, rows: Mapping[str, np.ndarray], batch_size: int, shuffle: bool = True, seed: int = 0):
        self.rows = dict(rows)
        self.num_rows = len(next(iter(self.rows.values())))
        self.batch_size, self.shuffle, self.seed = int(batch_size), bool(shuffle), int(seed)

    def __len__(self) -> int:
        return self.num_rows // self.batch_size

    def iter_epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Dict[str, np.ndarray]]:
        n = self.num_rows
        order = (
            np.random.RandomState((self.seed + int(epoch)) % 2**32).permutation(n)
            if self.shuffle
            else np.arange(n)
        )
        for b in range(int(start_batch), len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield {k: v[idx] for k, v in self.rows.items()}


def num_eval_rows(num_rows: int, eval_fraction: float) -> int:
    """Rows `split_rows` holds out: max(1, round(num_rows * eval_fraction)), 0 when eval_fraction is 0."""
    return max(1, int(round(num_rows * eval_fraction))) if eval_fraction > 0 else 0


def split_rows(
    rows: Mapping[str, np.ndarray], eval_fraction: float, seed: int
) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
    """(train, eval) rows: a seeded permutation puts `num_eval_rows(N, eval_fraction)` rows in eval."""
    n = len(next(iter(rows.values())))
    n_eval = num_eval_rows(n, eval_fraction)
    order = np.random.RandomState(seed % 2**32).permutation(n)
    eval_idx, train_idx = np.sort(order[:n_eval]), np.sort(order[n_eval:])
    return {k: v[train_idx] for k, v in rows.items()}, {k: v[eval_idx] for k, v in rows.items()}


def reward_init_params(
    params: Mapping[str, Any], config: LlamaConfig, source: str
) -> Tuple[Dict[str, Any], bool]:
    """What to load into a fresh ValueModel from checkpoint `params`: (params, strict).

    A reward checkpoint (it has `v_head.weight`) loads strictly. A causal-LM checkpoint contributes its backbone
    `model.*` (every backbone tensor must be there, shapes must match); its `lm_head.weight` is dropped.
    Raises CheckpointError naming `source` when the checkpoint does not fit `config`.
    """
    names = {n: tuple(v.shape) for n, v in params.items() if not n.startswith(META_PREFIX)}
    shapes = value_param_shapes(config)
    backbone = {n: s for n, s in shapes.items() if n != "v_head.weight"}
    if "v_head.weight" in names:
        check_compatible(shapes, names, source, strict=True)
        return dict(params), True
    check_compatible(
        backbone, {n: s for n, s in names.items() if n.startswith("model.")}, source, strict=True
    )
    return {n: v for n, v in params.items() if n.startswith("model.")}, False


def build_reward_model(config: LlamaConfig, params: Optional[Mapping[str, Any]], source: str) -> ValueModel:
    """A ValueModel initialised from a reward or causal-LM checkpoint (see `reward_init_params`), or random."""
    model = ValueModel(config)
    if params is None:
        logger.warning("%s names no checkpoint: the reward model starts from random weights", source)
        return model
    to_load, strict = reward_init_params(params, config, source)
    load_param_dict(model, to_load, source=source, strict=strict)
    if strict:
        logger.info("reward model initialised from reward checkpoint %s (strict)", source)
    else:
        model.v_head.weight.set_data(
            Tensor(np.zeros((1, config.hidden_size), np.float32), model.v_head.weight.dtype)
        )
        dropped = sorted(n for n in params if n not in to_load and not n.startswith(META_PREFIX))
        logger.info(
            "reward model backbone initialised from causal-LM checkpoint %s (%d model.* tensors, non-strict); "
            "dropped %s; v_head.weight zero-initialised",
            source, len(to_load), ", ".join(dropped) or "nothing",
        )  # fmt: skip
    return model


class RMTrainer(SupervisedTrainer):
    """`RMTrainer(config, model, batches, eval_rows, save_dir)`; `train()` runs the loop in the module doc."""

    def __init__(
        self,
        config: RMConfig,
        model: ValueModel,
        batches: Any,
        eval_rows: Optional[Mapping[str, np.ndarray]],
        save_dir: str,
        loss_scale: Any = None,
        is_main: bool = True,
    ):
        evaluator = None
        if eval_rows is not None and len(eval_rows["chosen_ids"]):
            evaluator = PairwiseEvaluator(model, eval_rows, config.eval_batch_size)
        super().__init__(
            "rm",
            config,
            model,
            PairwiseLoss(model),
            input_keys=RM_FIELDS,
            batches=batches,
            save_dir=save_dir,
            loss_scale=loss_scale,
            evaluator=evaluator,
            eval_interval=config.eval_interval,
            line_metrics=("accuracy",),
            is_main=is_main,
        )
        logger.info(
            "reward model: %d steps (%d batches of %d pairs per epoch), %s held-out pairs",
            self.total_steps, len(batches), config.batch_size, evaluator.n if evaluator else "no",
        )  # fmt: skip
