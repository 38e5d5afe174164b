"""PPO for RLHF with four Llama2 roles: the loop reads like the algorithm.

    for each iteration:
        1. generate    responses to a batch of prompts with the actor (KV-cache sampling, rollout log-probs)
        2. score       reward-model scores, reference log-probs, critic values (one compiled graph)
        3. advantages  r_t = -beta * KL_t (+ score at the last token); GAE(gamma, lambda); returns; whitening
        4. optimise    ppo_epochs x mini-batches: clipped policy loss (+ptx, -entropy), clipped value loss
        5. adapt beta, log, checkpoint

References: Ziegler et al. 2019 (KL-penalised rewards, adaptive KL), Ouyang et al. 2022 (PPO-ptx),
Schulman et al. 2017 (clipped surrogate), Schulman et al. 2016 (GAE).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Dict, Optional

import numpy as np
from mindspore import Tensor, nn
from tqdm import tqdm

from mindrlhf.algorithms import ppo_math
from mindrlhf.configs.ppo_config import PPOConfig
from mindrlhf.trainer.data_parallel import DataParallel
from mindrlhf.trainer.experience import Experience, PromptBatches  # noqa: F401  (PromptBatches: re-exported)
from mindrlhf.trainer.losses import metrics_dict
from mindrlhf.trainer.ppo_cells import ActorLoss, CriticLoss, ScoringForwards
from mindrlhf.trainer.score_guard import NonFiniteScores
from mindrlhf.trainer.train_step import build_train_step
from mindrlhf.utils import signals
from mindrlhf.utils.metrics import MetricsWriter
from mindrlhf.utils.run_state import load_run_state, save_run_state

logger = logging.getLogger(__name__)
log_line = logging.getLogger("mindrlhf.ppo")


def _np(x) -> np.ndarray:
    return x.asnumpy() if hasattr(x, "asnumpy") else np.asarray(x)


class PPOTrainer:
    """`PPOTrainer(config, actor, critic, reference, reward, dataset, ...)`; `train()` runs the whole loop.

    `dataset.batch(i)` must return the i-th rollout batch as numpy arrays with `prompt_ids`, `prompt_mask`
    `[B, P]`, `pretrain_ids`, `pretrain_mask`, `loss_mask` `[B, T]` (see `mindrlhf.data.schemas.PPO`); batch i is
    used by iteration i, so resuming at iteration k reads exactly what an uninterrupted run would.
    """

    def __init__(
        self,
        config: PPOConfig,
        actor: nn.Cell,
        critic: nn.Cell,
        reference: nn.Cell,
        reward: nn.Cell,
        dataset: Any,
        *,
        eos_token_id: int,
        pad_token_id: int,
        save_dir: str,
        loss_scale: Any = None,
        is_main: bool = True,
    ):
        self.config = config
        self.actor, self.critic, self.reference, self.reward = actor, critic, reference, reward
        for frozen in (reference, reward):
            for p in frozen.get_parameters():
                p.requires_grad = False
        self.dataset = dataset
        self.eos_token_id, self.pad_token_id = eos_token_id, pad_token_id
        self.save_dir = save_dir
        self.is_main = is_main  # data parallel: ranks hold identical weights; only rank 0 writes files
        # Whitening, the score normaliser, the adaptive KL controller and the loss means see the global rollout
        # batch (world * rollout_batch_size), or each rank would shape rewards with its own statistics.
        self.ranks = DataParallel()
        c = config
        p = c.max_prompt_length
        self.scoring = ScoringForwards(reference, reward, critic, p, c.temperature)
        steps, world = c.total_optimizer_steps, self.ranks.world
        actor_loss = ActorLoss(actor, p, c.temperature, c.cliprange, c.entropy_coef, c.ptx_coef, world)
        self.actor_step, self.actor_optimizer, _ = build_train_step(
            actor_loss, actor.trainable_params(), c.actor_lr, steps, c, loss_scale, "actor"
        )
        critic_loss = CriticLoss(critic, p, c.cliprange_value, c.vf_coef, world)
        self.critic_step, self.critic_optimizer, _ = build_train_step(
            critic_loss, critic.trainable_params(), c.critic_lr, steps, c, loss_scale, "critic"
        )
        self.kl_controller = ppo_math.make_kl_controller(
            c.adaptive_kl, c.init_kl_coef, c.kl_target, c.kl_horizon
        )
        self.score_normalizer = ppo_math.ScoreNormalizer(c.normalize_scores, c.score_clip)
        self.iteration = 0  # iterations completed
        self.score_guard = NonFiniteScores(c.max_nonfinite_iterations)  # NaN/inf reward scores
        self.score_ok, self.all_finite, self.no_update = np.ones(0, np.float32), True, False  # current batch
        self.stopped_by: Optional[str] = None  # the signal that stopped `train()` early, if one did
        self.metrics: Optional[MetricsWriter] = None

    # ------------------------------------------------------------------------------------------ experience
    def _generate(self, batch: Dict[str, np.ndarray]):
        """1. Sample one response per prompt: `generate` always returns max_new_tokens response columns (rows that
        stop early are padded), so later graphs keep one shape. The seed depends on the seed, the iteration and
        the rank: deterministic, and different on every data-parallel rank (one process keeps its old seeds)."""
        from mindrlhf.generation import generate

        c = self.config
        out = generate(
            self.actor,
            batch["prompt_ids"],
            batch["prompt_mask"],
            max_new_tokens=c.max_new_tokens,
            do_sample=True,
            temperature=c.temperature,
            top_k=c.top_k,
            top_p=c.top_p,
            eos_token_id=self.eos_token_id,
            pad_token_id=self.pad_token_id,
            seed=self.sampling_seed(),
        )
        sequences, response_mask, logprobs = _np(out.sequences), _np(out.response_mask), _np(out.logprobs)
        return sequences.astype(np.int32), response_mask.astype(np.float32), logprobs.astype(np.float32)

    def sampling_seed(self) -> int:
        """Sampling seed of this iteration on this rank: `(seed * 100003 + iteration) * world + rank`."""
        return (self.config.seed * 100_003 + self.iteration) * self.ranks.world + self.ranks.rank

    def make_experience(self, batch: Dict[str, np.ndarray]) -> Experience:
        """Steps 1-3 for one rollout batch (timings in `self.timings`)."""
        t0 = time.perf_counter()
        sequences, response_mask, old_logprobs = self._generate(batch)  # 1. generate
        attention_mask = np.concatenate([batch["prompt_mask"], response_mask], 1).astype(np.int32)
        t1 = time.perf_counter()
        scores, ref_logprobs, values = (  # 2. score
            _np(x) for x in self.scoring(Tensor(sequences), Tensor(attention_mask))
        )
        t2 = time.perf_counter()
        scores = self._finite_scores(scores)  # NaN/inf scores: 0, and out of the statistics and the losses
        ref_logprobs, values = ref_logprobs * response_mask, values * response_mask
        rewards, advantages, returns = self.advantages(
            scores, old_logprobs, ref_logprobs, values, response_mask
        )  # 3
        response_mask = response_mask * self.score_ok[:, None]  # rows with a NaN/inf score: out of the losses
        self.timings = {"generate": t1 - t0, "score": t2 - t1, "advantages": time.perf_counter() - t2}
        f32 = np.float32
        return Experience(
            sequences=sequences,
            attention_mask=attention_mask,
            response_mask=response_mask,
            old_logprobs=old_logprobs,
            ref_logprobs=ref_logprobs.astype(f32),
            old_values=values.astype(f32),
            scores=scores.astype(f32),
            rewards=rewards.astype(f32),
            advantages=advantages.astype(f32),
            returns=returns.astype(f32),
            pretrain_ids=batch["pretrain_ids"].astype(np.int32),
            pretrain_mask=batch["pretrain_mask"].astype(np.int32),
            loss_mask=batch["loss_mask"].astype(f32),
        )

    def advantages(self, scores, old_logprobs, ref_logprobs, values, response_mask):
        """3. Rewards, GAE advantages and returns of one rollout batch -> (rewards, advantages, returns) `[B, N]`.

        scores `[B]`: raw reward-model scores, normalised/clipped with statistics over every rank's scores;
        rewards: -beta * KL_t plus the shaped score at the last response token; advantages whitened over the
        response tokens of all ranks when `whiten_advantages`. Returns are GAE advantages (before whitening) +
        values.
        """
        c = self.config
        shaped_scores = self._shape_scores(scores)
        rewards = ppo_math.compute_rewards(
            old_logprobs, ref_logprobs, shaped_scores, response_mask, self.kl_controller.value, c.kl_estimator
        )
        advantages, returns = ppo_math.gae_advantages(rewards, values, response_mask, c.gamma, c.lam)
        if c.whiten_advantages:
            advantages = self.ranks.whiten(advantages, response_mask)
        return rewards, advantages, returns

    def _shape_scores(self, scores: np.ndarray) -> np.ndarray:
        """Normalise/clip scores; the running statistics are updated with every rank's scores (rank order),
        except those `_finite_scores` left out (NaN/inf: their rows get 0)."""
        if self.all_finite and self.ranks.world == 1:  # (all_finite: global counts, alike on every rank)
            return self.score_normalizer(scores)
        if self.all_finite:
            self.score_normalizer(self.ranks.gather(scores))  # identical update on every rank
            return self.score_normalizer(scores, update=False)
        ok = self.score_ok
        pairs = (scores, ok) if self.ranks.world == 1 else (self.ranks.gather(scores), self.ranks.gather(ok))
        self.score_normalizer(pairs[0][pairs[1] > 0])
        return np.where(ok > 0, self.score_normalizer(scores, update=False), 0.0)

    def _finite_scores(self, scores: np.ndarray) -> np.ndarray:
        """NaN/inf reward scores `[B]` (`score_guard`): 0 instead, kept out of the running statistics
        (`_shape_scores`) and, through `score_ok` `[B]`, out of the losses; `no_update` when none is left."""
        ok, bad, total = self.score_guard.check(scores, self.ranks, self.iteration)
        self.score_ok, self.all_finite, self.no_update = ok.astype(np.float32), bad == 0, bad == total
        return scores if ok.all() else np.where(ok, scores, 0.0)

    # ------------------------------------------------------------------------------------------ optimise
    def train_step(self, exp: Experience) -> Dict[str, float]:
        """4. ppo_epochs passes of shuffled mini-batches; one actor and one critic update per mini-batch."""
        c = self.config
        if self.no_update:  # every reward score was NaN/inf (`_finite_scores`): nothing to learn from
            return {}
        b = exp.sequences.shape[0]
        sums: Dict[str, list] = {}
        first: Dict[str, float] = {}
        for epoch in range(c.ppo_epochs):
            order = np.random.default_rng([c.seed, self.iteration, epoch]).permutation(b)
            for mb in range(c.num_mini_batches):
                idx = order[mb * c.mini_batch_size : (mb + 1) * c.mini_batch_size]
                t = {
                    f.name: Tensor(getattr(exp, f.name)[idx]) for f in dataclasses.fields(exp)
                }  # no deep copy
                lr = self.actor_step.current_lr()
                loss, a_metrics, overflow, a_norm = self.actor_step(
                    t["sequences"], t["attention_mask"], t["response_mask"], t["old_logprobs"], t["advantages"],
                    t["pretrain_ids"], t["pretrain_mask"], t["loss_mask"],
                )  # fmt: skip
                v_loss, v_metrics, v_overflow, v_norm = self.critic_step(
                    t["sequences"], t["attention_mask"], t["response_mask"], t["old_values"], t["returns"]
                )
                overflow = bool(overflow.asnumpy())
                log_line.info(
                    "PPO Batch: %d | PPO Epoch: %d | loss: [%.6f] | lr: [%.6g] | is overflow: %s | loss scale: %s",
                    mb, epoch, float(loss.asnumpy()), lr, overflow, self.actor_step.state_dict()["loss_scale"],
                )  # fmt: skip
                a = metrics_dict(ActorLoss.METRICS, a_metrics)
                v = metrics_dict(CriticLoss.METRICS, v_metrics)
                first = first or a  # logprob_diff: before any update, rollout and training log-probs agree
                row = {
                    "ppo/loss/actor": float(loss.asnumpy()), "ppo/loss/policy": a["policy_loss"],
                    "ppo/policy/clipfrac": a["clipfrac"], "ppo/policy/approx_kl": a["approx_kl"],
                    "ppo/policy/entropy": a["entropy"], "ppo/loss/ptx": a["ptx_loss"],
                    "ppo/loss/value": v["value_loss"], "ppo/val/clipfrac": v["value_clipfrac"],
                    "ppo/val/mean": v["value_mean"], "ppo/loss/critic": float(v_loss.asnumpy()),
                    "ppo/grad_norm/actor": float(a_norm.asnumpy()), "ppo/grad_norm/critic": float(v_norm.asnumpy()),
                    "ppo/overflow/actor": float(overflow), "ppo/overflow/critic": float(bool(v_overflow.asnumpy())),
                }  # fmt: skip
                for key, value in row.items():
                    sums.setdefault(key, []).append(float(value))
        out = {k: float(np.mean(v)) for k, v in sums.items()}
        out["ppo/logprob_diff/max"] = first["logprob_diff_max"]
        out["ppo/logprob_diff/mean"] = first["logprob_diff_mean"]
        out["ppo/lr/actor"] = self.actor_step.current_lr()
        out["ppo/lr/critic"] = self.critic_step.current_lr()
        out["ppo/loss_scale/actor"] = self.actor_step.state_dict()["loss_scale"]
        return out

    def adapt_kl(self, kl: float, exp: Experience) -> float:
        """5. Adaptive KL (Ziegler et al. 2019): beta moves by the global batch, world * rollout batch, per
        iteration (a per-rank count would make beta adapt `world` times too slowly). `kl` is the global mean."""
        return self.kl_controller.update(kl, exp.sequences.shape[0] * self.ranks.world)

    def rollout_metrics(self, exp: Experience) -> Dict[str, float]:
        """Rollout statistics (score, reward, KL, lengths, ...); with data parallel, the mean over ranks."""
        rollout = self._experience_metrics(exp)
        if self.ranks.world > 1:
            keys = sorted(rollout)
            means = self.ranks.mean(np.array([rollout[k] for k in keys]))
            rollout = {k: float(v) for k, v in zip(keys, means)}
        return rollout

    def _experience_metrics(self, exp: Experience) -> Dict[str, float]:
        mask = exp.response_mask
        kl = ((exp.old_logprobs - exp.ref_logprobs) * mask).sum(1)  # k1 per sequence
        lengths = mask.sum(1)
        return {
            "env/score_mean": float(exp.scores.mean()),
            "env/score_std": float(exp.scores.std()),
            "env/reward_mean": float(exp.rewards.sum(1).mean()),
            "env/reward_std": float(exp.rewards.sum(1).std()),
            "objective/kl": float(kl.mean()),
            "objective/kl_coef": float(self.kl_controller.value),
            "ppo/returns/mean": float(ppo_math.masked_mean(exp.returns, mask)),
            "ppo/val/explained_variance": float(
                ppo_math.explained_variance(exp.old_values, exp.returns, mask)
            ),
            "response/length_mean": float(lengths.mean()),
            "response/length_max": float(lengths.max()),
        }

    # ------------------------------------------------------------------------------------------ loop
    def train(self, stop_after: Optional[int] = None) -> Dict[str, float]:
        """Run iterations `self.iteration .. num_iterations - 1`; returns the last iteration's metrics.

        `stop_after=k` stops (with a checkpoint) after k iterations of this call, as if the job were killed
        there: the schedule is still the full run's, so a later `resume` continues exactly.
        """
        c = self.config
        end = c.num_iterations if stop_after is None else min(c.num_iterations, self.iteration + stop_after)
        os.makedirs(self.save_dir, exist_ok=True)
        self.metrics = None
        if self.is_main:
            self.metrics = MetricsWriter(
                os.path.join(self.save_dir, c.metrics_file),
                tensorboard_dir=os.path.join(self.save_dir, "tensorboard"),
                resume_step=self.iteration - 1 if self.iteration else None,
            )
        last: Dict[str, float] = {}
        bar = tqdm(range(self.iteration, end), desc="PPO", initial=self.iteration, total=c.num_iterations)
        for _ in bar:
            start = time.perf_counter()
            exp = self.make_experience(self.dataset.batch(self.iteration))  # 1-3
            t_train = time.perf_counter()
            last = self.train_step(exp)  # 4
            train_seconds = time.perf_counter() - t_train
            last.update(self.rollout_metrics(exp))
            self.adapt_kl(last["objective/kl"], exp)  # 5
            elapsed = time.perf_counter() - start
            last.update(
                {
                    "time/generate": self.timings["generate"],
                    "time/score": self.timings["score"],
                    "time/advantages": self.timings["advantages"],
                    "time/train": train_seconds,
                    "time/iteration": elapsed,
                    "perf/tokens_per_s": float(exp.response_mask.sum() / elapsed),
                }
            )
            if self.metrics and (
                self.iteration % c.log_interval == 0 or self.iteration == c.num_iterations - 1
            ):
                self.metrics.write(self.iteration, last)
            bar.set_postfix(score=f"{last['env/score_mean']:.3f}", kl=f"{last['objective/kl']:.3f}")
            self.iteration += 1
            save_now = (c.save_interval and self.iteration % c.save_interval == 0) or self.iteration == end
            if self.is_main and save_now:
                self.save()
            if self.iteration < end and self._stop_requested():  # Ctrl-C / SIGTERM: a safe point
                self._stop_on_signal(saved=bool(save_now))
                break
        if self.metrics:
            self.metrics.close()
        return last

    # ------------------------------------------------------------------------------------------ checkpoints
    def _stop_requested(self) -> bool:
        """A SIGINT/SIGTERM asked to stop (`mindrlhf.utils.signals`); all ranks stop together if any rank got it."""
        stop = float(signals.stop_requested())
        if self.ranks.world > 1:
            stop = float(self.ranks.sum(np.array([stop], np.float32))[0])
        return stop > 0

    def _stop_on_signal(self, saved: bool) -> None:
        """Save (unless this iteration just did) and say where to resume from; `stopped_by` tells the caller."""
        if self.is_main and not saved:
            self.save()
        self.stopped_by = signals.received() or "a signal on another rank"
        logger.warning(
            "stopped by %s after iteration %d of %d; checkpoint step_%06d in %s; continue with --resume %s",
            self.stopped_by, self.iteration, self.config.num_iterations, self.iteration,
            os.path.join(self.save_dir, "checkpoints"), self.save_dir,
        )  # fmt: skip

    def _state(self):
        models = {"actor": self.actor, "critic": self.critic}
        optimizers = {"actor": self.actor_optimizer, "critic": self.critic_optimizer}
        return models, optimizers

    def save(self) -> str:
        """Checkpoint after `self.iteration` iterations (layout: `mindrlhf.utils.run_state`).

        actor.ckpt / critic.ckpt carry MindFormers names (the actor loads as an SFT model again); the optimiser
        files hold Adam moments and the step; state.json the KL coefficient, score statistics and loss scales.
        The iteration count is also the data position: iteration i reads batch i.
        """
        models, optimizers = self._state()
        state = {
            "kl_controller": self.kl_controller.state_dict(),
            "score_normalizer": self.score_normalizer.state_dict(),
            "nonfinite_streak": self.score_guard.streak,
            "actor_step": self.actor_step.state_dict(),
            "critic_step": self.critic_step.state_dict(),
            "config": self.config.to_dict(),
        }
        return save_run_state(self.save_dir, self.iteration, models, optimizers, state)

    def resume(self, save_dir: str) -> None:
        """Restore everything `save` wrote under `save_dir`; training then continues exactly."""
        models, optimizers = self._state()
        state = load_run_state(save_dir, models, optimizers)
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.score_normalizer.load_state_dict(state["score_normalizer"])
        self.score_guard.streak = int(state.get("nonfinite_streak", 0))
        self.actor_step.load_state_dict(state["actor_step"])
        self.critic_step.load_state_dict(state["critic_step"])
        self.iteration = int(state["step"])
