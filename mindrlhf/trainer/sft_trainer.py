"""Supervised fine-tuning of a causal LM, and the fixed-shape training loop it shares with the reward model.

    for step in range(start, total_steps):
        1. batch     the next fixed-shape batch; step s reads batch s % n of epoch s // n (exact resume)
        2. update    one jitted TrainStep: forward, masked next-token NLL, backward, clip, AdamW
        3. log       every log_interval steps: read the losses back, one log line, one metrics row
        4. save      every save_interval steps and at the end (resumable run state); export model + YAML

SFT loss (`mode="sft"`): -mean log p(x_t | x_<t) over response tokens (the dataset's `loss_mask`, aligned to
input positions). Language-model pre-training (`mode="lm"`): the same over every real token (`attention_mask`).

Data parallel (MindSpore's auto-parallel context set to data_parallel over N ranks before the trainer is built):
each rank steps on its own shard, TrainStep averages the gradients, the SFT mean runs over the tokens of the
global batch (all ranks), and only the main rank (`is_main`) writes metrics, checkpoints and the exported model.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops
from tqdm import tqdm

from mindrlhf.configs.run_config import write_run_yaml
from mindrlhf.configs.train_config import SFTConfig, _TrainConfig
from mindrlhf.trainer import losses
from mindrlhf.trainer.data_parallel import DataParallel, GlobalMean, GlobalSum, world_and_rank
from mindrlhf.trainer.train_step import build_train_step
from mindrlhf.utils import signals
from mindrlhf.utils.checkpoint import CheckpointError, save_checkpoint
from mindrlhf.utils.metrics import MetricsWriter
from mindrlhf.utils.run_state import load_run_state, save_run_state

logger = logging.getLogger(__name__)

MODEL_CKPT = "model.ckpt"  # final weights, MindFormers names
MODEL_YAML = (
    "model.yaml"  # MindFormers run YAML naming MODEL_CKPT (train.py --sft_model_path / --reward_model_path)
)


class SFTLoss(nn.Cell):
    """Masked next-token NLL of a LlamaForCausalLM; returns (loss, metrics `[len(METRICS)]`).

    input_ids, attention_mask, loss_mask: `[B, T]` int32; loss_mask[t] = 1 means input_ids[t] is a target.
    `data_parallel` = N > 1 ranks: loss and token count are those of the global batch (identical on every rank):
    the per-rank mean goes through `GlobalMean`, so N ranks train exactly as one process over the global batch
    even when the ranks hold different numbers of target tokens.
    """

    METRICS = ("target_tokens",)

    def __init__(self, model: nn.Cell, data_parallel: int = 1):
        super().__init__(auto_prefix=False)
        self.model = model
        self.global_mean = GlobalMean(data_parallel)
        self.global_sum = GlobalSum(data_parallel)

    def construct(self, input_ids, attention_mask, loss_mask):
        logits = self.model(input_ids, attention_mask)  # (B, T, V) float32
        loss = losses.ptx_loss(logits, input_ids, loss_mask)
        targets = ops.stop_gradient(loss_mask[:, 1:].astype(ms.float32).sum())
        loss = self.global_mean(loss, targets)
        return loss, ops.stack([self.global_sum(targets)])


class SupervisedTrainer:
    """One model, one loss cell, fixed-shape batches: the loop in the module doc, used by SFT and the reward model.

    `batches` has `len()` (batches per epoch) and `iter_epoch(epoch, start_batch)` yielding `{field: int32
    [B, L]}` (`mindrlhf.data.reader.MindRecordBatches`). `input_keys` are the fields passed to `loss_cell`, in
    order; its metrics vector is named by `loss_cell.METRICS`. `evaluator()` (optional) returns held-out metrics; it runs
    every `eval_interval` steps (0: only at the end). `is_main=False` (data-parallel ranks other than 0, whose
    weights are identical to rank 0's): train and log lines only; no metrics file, checkpoints or export.
    """

    def __init__(
        self,
        name: str,
        config: _TrainConfig,
        model: nn.Cell,
        loss_cell: nn.Cell,
        input_keys: Sequence[str],
        batches: Any,
        save_dir: str,
        loss_scale: Any = None,
        evaluator: Optional[Callable[[], Dict[str, float]]] = None,
        eval_interval: int = 0,
        line_metrics: Sequence[str] = (),
        is_main: bool = True,
    ):
        if len(batches) < 1:
            raise ValueError(f"the training data has no full batch of {config.batch_size} rows")
        self.name, self.config, self.model = name, config, model
        self.input_keys, self.metric_names = tuple(input_keys), tuple(loss_cell.METRICS)
        self.batches, self.save_dir = batches, save_dir
        self.evaluator, self.eval_interval = evaluator, eval_interval
        self.line_metrics = tuple(line_metrics)  # metric_names also shown in the log line
        self.is_main = is_main
        self.total_steps = config.total_steps(len(batches))
        self.train_step, self.optimizer, self.lrs = build_train_step(
            loss_cell,
            model.trainable_params(),
            config.learning_rate,
            self.total_steps,
            config,
            loss_scale,
            name,
        )
        self.step = 0  # optimiser steps completed (also the data position)
        self.metric_prefix = f"{name}/"  # metrics-file keys: sft/loss, rm/accuracy (DPO: TRL's bare names)
        self.world = world_and_rank()[0]
        self.stopped_by: Optional[str] = None  # the signal that stopped `train()` early, if one did
        self.log_line = logging.getLogger(f"mindrlhf.{name}")
        self.metrics: Optional[MetricsWriter] = None

    # ------------------------------------------------------------------------------------------ data
    def _batch_stream(self) -> Iterator[Dict[str, np.ndarray]]:
        """Batches from position `self.step` on, crossing epochs: step s is batch s % n of epoch s // n."""
        epoch, start = divmod(self.step, len(self.batches))
        while True:
            yield from self.batches.iter_epoch(epoch, start)
            epoch, start = epoch + 1, 0

    # ------------------------------------------------------------------------------------------ loop
    def train(self, stop_at_step: Optional[int] = None) -> Dict[str, float]:
        """Run steps `self.step .. total_steps - 1`, then save and export; returns the last logged metrics.

        `stop_at_step`: save and return after that many steps without exporting (the schedule still spans
        total_steps; `resume` continues exactly), for jobs with a time limit.
        """
        c = self.config
        end = self.total_steps if stop_at_step is None else min(int(stop_at_step), self.total_steps)
        os.makedirs(self.save_dir, exist_ok=True)
        if self.is_main:
            self.metrics = MetricsWriter(
                os.path.join(self.save_dir, c.metrics_file),
                tensorboard_dir=os.path.join(self.save_dir, "tensorboard"),
                resume_step=self.step if self.step else None,
            )
        last: Dict[str, float] = {}
        pending: List[tuple] = []  # step outputs not yet read back (tensors; no host sync until logged)
        stream = self._batch_stream()
        bar = tqdm(
            total=end, initial=self.step, desc=self.name.upper(), disable=None if self.is_main else True,
            mininterval=2.0,
        )  # fmt: skip
        tick, timed_steps, compiled = time.perf_counter(), 0, False
        while self.step < end:
            batch = next(stream)  # 1. batch
            pending.append(self.train_step(*(Tensor(batch[k]) for k in self.input_keys)))  # 2. update
            self.step += 1
            timed_steps += 1
            bar.update(1)
            if not compiled:  # the first call compiles the graph: time it apart from the steps/s
                pending[-1][0].asnumpy()
                logger.info("train step compiled and run once in %.1f s", time.perf_counter() - tick)
                tick, timed_steps, compiled = time.perf_counter(), 0, True
            finished = self.step == self.total_steps
            if self.step % c.log_interval == 0 or self.step == end:  # 3. log
                now = time.perf_counter()
                last = self._log(pending, timed_steps / (now - tick) if timed_steps else float("nan"))
                pending, tick, timed_steps = [], now, 0
            if self.evaluator is not None and (
                (self.eval_interval and self.step % self.eval_interval == 0) or finished
            ):
                last.update(self._evaluate())
                tick, timed_steps = time.perf_counter(), 0
            saving = (c.save_interval and self.step % c.save_interval == 0) or self.step == end
            if saving and self.is_main:  # 4. save (rank 0 only: data-parallel ranks hold identical weights)
                self.save()
                tick, timed_steps = time.perf_counter(), 0
            if self.step < end and self._stop_requested():  # Ctrl-C / SIGTERM: a safe point
                if self.is_main and not saving:
                    self.save()
                self.stopped_by = signals.received()
                logger.warning("stopped by %s after step %d", self.stopped_by, self.step)
                break
        bar.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.step == self.total_steps:
            if self.is_main:
                self.export()
        else:
            logger.info(
                "stopped after step %d of %d; continue with --resume %s",
                self.step,
                self.total_steps,
                self.save_dir,
            )
        return last

    def _stop_requested(self) -> bool:
        """A SIGINT/SIGTERM asked to stop (`mindrlhf.utils.signals`). Data parallel: the ranks agree (any rank's
        signal stops all) at log-interval steps only, so the loop keeps no host sync per step."""
        stop = signals.stop_requested()
        if self.world == 1:
            return stop
        if self.step % self.config.log_interval:
            return False
        return bool(DataParallel(self.world).sum(np.array([float(stop)]))[0] > 0)

    def _log(self, pending: List[tuple], steps_per_s: float) -> Dict[str, float]:
        """Read back the losses of the last len(pending) steps; one log line and one metrics row (their means)."""
        n, p = self.name, self.metric_prefix
        loss = np.array([float(out[0].asnumpy()) for out in pending])
        metrics = np.stack([out[1].asnumpy() for out in pending]).mean(0)  # [len(METRICS)], named below
        overflow = [bool(out[2].asnumpy()) for out in pending]
        lr = float(self.lrs[min(self.step, self.total_steps) - 1])
        loss_scale = self.train_step.state_dict()["loss_scale"]
        epoch = (self.step - 1) // len(self.batches)
        row = {
            f"{p}loss": float(loss.mean()),
            **{f"{p}{k}": v for k, v in losses.metrics_dict(self.metric_names, metrics).items()},
            f"{p}grad_norm": float(pending[-1][3].asnumpy()),
            f"{p}lr": lr,
            f"{p}loss_scale": loss_scale,
            f"{p}overflow_steps": float(sum(overflow)),
            f"{p}epoch": float(epoch),
            "perf/steps_per_s": steps_per_s,
        }
        extra = "".join(f" | {k}: [{row[f'{p}{k}']:.4f}]" for k in self.line_metrics)
        self.log_line.info(
            "%s Step: %d/%d | %s Epoch: %d | loss: [%.6f]%s | lr: [%.6g] | is overflow: %s | loss scale: %s | "
            "steps/s: %.2f",
            n.upper(), self.step, self.total_steps, n.upper(), epoch, row[f"{p}loss"], extra, lr, any(overflow),
            loss_scale, row["perf/steps_per_s"],
        )  # fmt: skip
        if self.metrics is not None:
            self.metrics.write(self.step, row)
        return row

    def _evaluate(self) -> Dict[str, float]:
        start = time.perf_counter()
        out = self.evaluator()
        out["time/eval"] = time.perf_counter() - start
        self.log_line.info(
            "%s Eval: step %d | %s", self.name.upper(), self.step,
            " | ".join(f"{k}: {v:.4f}" for k, v in out.items()),
        )  # fmt: skip
        if self.metrics is not None:
            self.metrics.write(self.step, out)
        return out

    # ------------------------------------------------------------------------------------------ checkpoints
    def save(self) -> str:
        """Resumable state after `self.step` steps (layout: `mindrlhf.utils.run_state`; model.ckpt in it has
        MindFormers names, model_optimizer.ckpt the Adam moments and step, state.json the loss scale)."""
        state = {
            "train_step": self.train_step.state_dict(),
            "total_steps": self.total_steps,
            "config": self.config.to_dict(),
        }
        return save_run_state(
            self.save_dir, self.step, {"model": self.model}, {"model": self.optimizer}, state
        )

    def resume(self, save_dir: str) -> None:
        """Restore what `save` wrote under `save_dir`; training then continues bit-exactly."""
        state = load_run_state(save_dir, {"model": self.model}, {"model": self.optimizer})
        self.train_step.load_state_dict(state["train_step"])
        self.step = int(state["step"])
        now = self.config.to_dict()
        for key in sorted(k for k, v in state.get("config", {}).items() if k in now and now[k] != v):
            logger.info("resume: %s is %r (the saved run had %r)", key, now[key], state["config"][key])
        if self.step > self.total_steps:
            raise CheckpointError(
                f"{save_dir}: the checkpoint is at step {self.step}, past this run's {self.total_steps} steps; "
                "raise --max_steps or --epochs"
            )

    def export(self) -> str:
        """Write `save_dir/model.ckpt` and `save_dir/model.yaml` (a MindFormers run YAML naming it)."""
        ckpt = save_checkpoint(self.model, os.path.join(self.save_dir, MODEL_CKPT))
        path = write_run_yaml(
            self.model.config, os.path.join(self.save_dir, MODEL_YAML), checkpoint=os.path.abspath(ckpt)
        )
        logger.info("exported %s and %s", ckpt, path)
        return path


class SFTTrainer(SupervisedTrainer):
    """`SFTTrainer(config, model, batches, save_dir)`; `train()` runs SFT (or LM pre-training, `config.mode`)."""

    def __init__(
        self,
        config: SFTConfig,
        model: nn.Cell,
        batches: Any,
        save_dir: str,
        loss_scale: Any = None,
        is_main: bool = True,
    ):
        # Chosen once: 'lm' trains on every real token, so the attention mask doubles as the loss mask.
        loss_key = "loss_mask" if config.mode == "sft" else "attention_mask"
        super().__init__(
            "sft",
            config,
            model,
            SFTLoss(model, world_and_rank()[0]),
            input_keys=("input_ids", "attention_mask", loss_key),
            batches=batches,
            save_dir=save_dir,
            loss_scale=loss_scale,
            is_main=is_main,
        )
        logger.info(
            "SFT mode %r: loss on %s; %d steps (%d batches of %d per epoch)",
            config.mode, "response tokens (loss_mask)" if config.mode == "sft" else "every real token",
            self.total_steps, len(batches), config.batch_size,
        )  # fmt: skip
