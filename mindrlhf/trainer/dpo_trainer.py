"""Direct preference optimisation (Rafailov et al. 2023) of a causal LM on the reward model's comparison pairs.

    setup     reference = a frozen copy of the SFT model; its log-probs of the held-out pairs once, and of every
              training pair once when precompute_ref_log_probs (the reference is then released)
    for step in range(start, total_steps):
        1. batch      B pairs (chosen_ids, chosen_mask, rejected_ids, rejected_mask), fixed shape
        2. reference  log pi_ref(y|x) of chosen and rejected: one jitted [2B, T] forward, no gradients
                      (read from the rows instead when precomputed)
        3. update     log pi(y|x) from one [2B, T] policy forward; DPOLoss (sigmoid / ipo / hinge, chosen at
                      setup); jitted TrainStep
        4. log        loss, rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen,
                      logps/rejected (TRL's names), grad_norm, lr
        5. evaluate   the same on the held-out pairs (eval/...); save resumable state; export model.ckpt +
                      model.yaml, an SFT (causal-LM) model that train.py --sft_model_path takes

Sequence log-prob log pi(y|x) = sum over the response tokens of log pi(y_t | x, y_<t) (IPO: their mean, as TRL
does for loss_type "ipo"). The `rm` dataset stores [BOS] + prompt + response + [EOS] without the prompt length,
so the response is taken to start where chosen and rejected first differ: every earlier token has the same
context in both sequences, so its log-prob is the same in both and cancels in the DPO margin
h = (pc - pr) - (rc - rr). The loss equals TRL's exactly; logps/* and rewards/chosen, rewards/rejected also
count the answers' common first tokens (rewards/margins and rewards/accuracies do not change). For "ipo" the
per-token mean runs over the tokens from that first difference on, so answers that share leading tokens get a
larger normaliser in TRL than here.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, mint, nn, ops

from mindrlhf.algorithms.dpo_math import dpo_loss
from mindrlhf.configs.dpo_config import DPOConfig
from mindrlhf.models.roles import freeze
from mindrlhf.trainer.losses import gather_logprobs
from mindrlhf.trainer.policy_losses import DPOLoss
from mindrlhf.trainer.rm_trainer import RM_FIELDS, ArrayBatches
from mindrlhf.trainer.sft_trainer import SupervisedTrainer

logger = logging.getLogger(__name__)

REF_FIELDS = ("ref_chosen_logps", "ref_rejected_logps")
"""Reference log-probs `[B]` float32 added to each batch (precomputed columns, or one reference forward)."""

DPO_METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)
"""TRL's DPOTrainer metric names, in the order `DPOPairLoss` returns them (batch means)."""


def response_masks(chosen_ids, chosen_mask, rejected_ids, rejected_mask) -> Tuple[Tensor, Tensor]:
    """(chosen, rejected) response masks `[B, T]` float32: real tokens from the first position where the two
    sequences differ on (token or mask) onwards. Inputs `[B, T]` int32; works in PyNative and in graphs."""
    same = mint.logical_and(
        mint.eq(chosen_ids, rejected_ids), mint.logical_and(chosen_mask > 0, rejected_mask > 0)
    )
    # diverged[t] = 1 once any position <= t differed (cumulative count of differences > 0)
    diverged = (ops.cumsum(mint.logical_not(same).astype(ms.float32), 1) > 0).astype(ms.float32)
    return chosen_mask.astype(ms.float32) * diverged, rejected_mask.astype(ms.float32) * diverged


class PairLogps(nn.Cell):
    """Sequence log-probs of chosen and rejected under `model`, from one `[2B, T]` forward -> ([B], [B]).

    log pi(y|x) = sum_t response_mask[t] * log p(ids[t] | ids[<t]) (targets aligned as in `ptx_loss`);
    `average=True` divides by the number of response tokens (IPO's length normalisation, TRL's convention).
    """

    def __init__(self, model: nn.Cell, average: bool = False):
        super().__init__(auto_prefix=False)
        self.model = model
        self.average = bool(average)  # a graph constant, chosen once

    def construct(self, chosen_ids, chosen_mask, rejected_ids, rejected_mask):
        b = chosen_ids.shape[0]
        ids = ops.cat((chosen_ids, rejected_ids), 0)  # (2B, T)
        attention = ops.cat((chosen_mask, rejected_mask), 0)
        resp = ops.cat(response_masks(chosen_ids, chosen_mask, rejected_ids, rejected_mask), 0)[:, 1:]
        logits = self.model(ids, attention)  # (2B, T, V)
        logprobs = gather_logprobs(logits[:, :-1], ids[:, 1:])  # (2B, T-1): token t+1 given <= t
        logprobs = mint.where(resp > 0, logprobs, ops.zeros_like(logprobs))
        seq = mint.sum(logprobs, dim=1)  # (2B,)
        if self.average:
            seq = seq / mint.clamp(mint.sum(resp, dim=1), min=1.0)
        return seq[:b], seq[b:]


class FrozenPairLogps(nn.Cell):
    """`PairLogps` compiled once as its own graph, no gradients: the reference forward, and evaluation."""

    def __init__(self, model: nn.Cell, average: bool = False):
        super().__init__(auto_prefix=False)
        self.logps = PairLogps(model, average)

    @ms.jit
    def construct(self, chosen_ids, chosen_mask, rejected_ids, rejected_mask):
        chosen, rejected = self.logps(chosen_ids, chosen_mask, rejected_ids, rejected_mask)
        return ops.stop_gradient(chosen), ops.stop_gradient(rejected)


class DPOPairLoss(nn.Cell):
    """mean DPO loss of the policy on B pairs; metrics `[len(METRICS)]` (TRL's names, batch means).

    construct(chosen_ids, chosen_mask, rejected_ids, rejected_mask `[B, T]` int32, ref_chosen_logps,
    ref_rejected_logps `[B]` float32) -> (loss, metrics). rewards/accuracies counts chosen reward > rejected
    reward strictly, as TRL does. Metrics carry no gradient.
    """

    METRICS = DPO_METRICS

    def __init__(self, model: nn.Cell, config: DPOConfig):
        super().__init__(auto_prefix=False)
        self.logps = PairLogps(model, average=config.loss_type == "ipo")
        self.dpo = DPOLoss(config.beta, config.loss_type, config.label_smoothing)

    def construct(
        self, chosen_ids, chosen_mask, rejected_ids, rejected_mask, ref_chosen_logps, ref_rejected_logps
    ):
        chosen, rejected = self.logps(chosen_ids, chosen_mask, rejected_ids, rejected_mask)
        losses, chosen_rewards, rejected_rewards = self.dpo(
            chosen, rejected, ref_chosen_logps, ref_rejected_logps
        )
        metrics = ops.stack(
            [
                chosen_rewards.mean(),
                rejected_rewards.mean(),
                (chosen_rewards > rejected_rewards).astype(ms.float32).mean(),
                (chosen_rewards - rejected_rewards).mean(),
                ops.stop_gradient(chosen).mean(),
                ops.stop_gradient(rejected).mean(),
            ]
        )
        return losses.mean(), metrics


def all_pair_logps(
    logps: Callable, rows: Mapping[str, np.ndarray], batch_size: int
) -> Tuple[np.ndarray, np.ndarray]:
    """`logps` over every pair of `rows` in fixed batches (one compiled shape) -> (chosen [N], rejected [N])
    float32. The last batch is padded with copies of the first rows; the padding is dropped."""
    n = len(rows["chosen_ids"])
    b = min(int(batch_size), n)
    idx = np.arange(-(-n // b) * b) % n
    chosen, rejected = [], []
    for start in range(0, len(idx), b):
        part = idx[start : start + b]
        c, r = logps(*(Tensor(np.asarray(rows[k][part], np.int32)) for k in RM_FIELDS))
        chosen.append(c.asnumpy())
        rejected.append(r.asnumpy())
    return np.concatenate(chosen)[:n].astype(np.float32), np.concatenate(rejected)[:n].astype(np.float32)


def with_reference_logps(
    rows: Mapping[str, np.ndarray], reference: Callable, batch_size: int
) -> Dict[str, Any]:
    """`rows` plus the REF_FIELDS columns `[N]` computed by `reference` (a `FrozenPairLogps`)."""
    ref_chosen, ref_rejected = all_pair_logps(reference, rows, batch_size)
    return {**rows, REF_FIELDS[0]: ref_chosen, REF_FIELDS[1]: ref_rejected}


class ReferencePerBatch:
    """Batches with REF_FIELDS added by one reference forward per batch (`len()` and `iter_epoch` as the
    wrapped batches): the default, when reference log-probs are not precomputed."""

    def __init__(self, batches: Any, reference: Callable):
        self.batches, self.reference = batches, reference

    def __len__(self) -> int:
        return len(self.batches)

    def iter_epoch(self, epoch: int, start_batch: int = 0) -> Iterator[Dict[str, np.ndarray]]:
        for batch in self.batches.iter_epoch(epoch, start_batch):
            chosen, rejected = self.reference(*(Tensor(batch[k]) for k in RM_FIELDS))
            yield {**batch, REF_FIELDS[0]: chosen.asnumpy(), REF_FIELDS[1]: rejected.asnumpy()}


class DPOEvaluator:
    """`evaluator()` -> eval/loss and eval/<TRL metric> over all held-out pairs (their reference log-probs are
    computed once, at setup), plus eval/pairs. The policy forward is `FrozenPairLogps` (compiled once)."""

    def __init__(self, model: nn.Cell, rows: Mapping[str, Any], config: DPOConfig):
        self.policy = FrozenPairLogps(model, average=config.loss_type == "ipo")
        self.rows, self.config = rows, config
        self.n = len(rows["chosen_ids"])

    def __call__(self) -> Dict[str, float]:
        c = self.config
        chosen, rejected = all_pair_logps(self.policy, self.rows, c.eval_batch_size)
        losses, chosen_rewards, rejected_rewards = dpo_loss(
            chosen, rejected, self.rows[REF_FIELDS[0]], self.rows[REF_FIELDS[1]], c.beta, c.loss_type,
            c.label_smoothing,
        )  # fmt: skip
        values = (
            chosen_rewards.mean(),
            rejected_rewards.mean(),
            (chosen_rewards > rejected_rewards).mean(),
            (chosen_rewards - rejected_rewards).mean(),
            chosen.mean(dtype=np.float64),
            rejected.mean(dtype=np.float64),
        )
        out = {"eval/loss": float(losses.mean())}
        out.update({f"eval/{k}": float(v) for k, v in zip(DPO_METRICS, values)})
        out["eval/pairs"] = float(self.n)
        return out


def build_reference(config, params: Mapping[str, Any], source: str, loss_type: str) -> FrozenPairLogps:
    """The frozen reference: a LlamaForCausalLM `config` loaded strictly with `params`, as a jitted forward."""
    from mindrlhf.models.llama.model import LlamaForCausalLM
    from mindrlhf.utils.checkpoint import load_param_dict

    model = LlamaForCausalLM(config)
    load_param_dict(model, params, source=source, strict=True)
    return FrozenPairLogps(freeze(model), average=loss_type == "ipo")


class DPOTrainer(SupervisedTrainer):
    """`DPOTrainer(config, policy, reference, train_rows, eval_rows, save_dir)`; `train()` runs the loop above.

    `policy` is a LlamaForCausalLM (trained); `reference` a `FrozenPairLogps` over a frozen copy of its initial
    weights (see `build_reference`). `train_rows` / `eval_rows` are in-memory rm rows `{field: [N, T]}` (eval
    may be None). Batches follow `ArrayBatches`' order rule (seeded per epoch), so `resume` is exact.
    """

    def __init__(
        self,
        config: DPOConfig,
        policy: nn.Cell,
        reference: FrozenPairLogps,
        train_rows: Mapping[str, np.ndarray],
        eval_rows: Optional[Mapping[str, np.ndarray]],
        save_dir: str,
        loss_scale: Any = None,
    ):
        rows = {k: np.asarray(train_rows[k], np.int32) for k in RM_FIELDS}
        evaluator = None
        if eval_rows is not None and len(eval_rows["chosen_ids"]):
            eval_rows = with_reference_logps(
                {k: np.asarray(eval_rows[k], np.int32) for k in RM_FIELDS}, reference, config.eval_batch_size
            )
            evaluator = DPOEvaluator(policy, eval_rows, config)
        # Variant chosen once: reference columns in the rows, or a reference forward per batch.
        if config.precompute_ref_log_probs:
            rows = with_reference_logps(rows, reference, config.eval_batch_size)
            batches = ArrayBatches(rows, config.batch_size, config.shuffle, config.seed)
            reference = None  # not needed any more: its weights can be freed
        else:
            batches = ReferencePerBatch(
                ArrayBatches(rows, config.batch_size, config.shuffle, config.seed), reference
            )
        super().__init__(
            "dpo",
            config,
            policy,
            DPOPairLoss(policy, config),
            input_keys=RM_FIELDS + REF_FIELDS,
            batches=batches,
            save_dir=save_dir,
            loss_scale=loss_scale,
            evaluator=evaluator,
            eval_interval=config.eval_interval,
            line_metrics=("rewards/accuracies", "rewards/margins"),
        )
        self.reference = reference
        self.metric_prefix = ""  # TRL's names: loss, rewards/chosen, ... (eval: eval/loss, eval/rewards/...)
        logger.info(
            "DPO %s (beta %g%s): %d steps (%d batches of %d pairs per epoch), reference log-probs %s, %s held-out "
            "pairs",
            config.loss_type, config.beta,
            f", label_smoothing {config.label_smoothing:g}" if config.label_smoothing else "",
            self.total_steps, len(batches), config.batch_size,
            "precomputed" if config.precompute_ref_log_probs else "one forward per batch",
            evaluator.n if evaluator else "no",
        )  # fmt: skip
