"""PPO for RLHF with four Llama2 roles: the loop reads like the algorithm.

    for each iteration:
        1. generate    responses to a batch of prompts with the actor (KV-cache sampling, rollout log-probs)
        2. score       reward-model scores, reference log-probs, critic values (one compiled graph)
        3. advantages  r_t = -beta * KL_t (+ score at the last token); GAE(gamma, lambda); returns; whitening
        4. optimise    ppo_epochs x mini-batches: clipped policy loss (+ptx, -entropy), clipped value loss
        5. adapt beta, log, checkpoint

References: Ziegler et al. 2019 (KL-penalised rewards, adaptive KL), Ouyang et al. 2022 (PPO-ptx),
Schulman et al. 2017 (clipped surrogate), Schulman et al. 2016 (GAE).

The same loop runs critic-free (`advantage_estimator: grpo | dr_grpo | rloo`; Shao et al. 2024, Liu et al. 2025,
Ahmadian et al. 2024): each prompt sampled `num_generations` times (rows contiguous); 2. reward model and/or
reward functions (`reward_sources`); 3. `group_advantages` of each response's summed reward, one per response;
4. the generalised clipped loss (+ beta * k3 KL). Chosen in `__init__`: no critic is built, stepped or saved.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any, Dict, Optional

import numpy as np
from mindspore import Tensor, nn
from tqdm import tqdm

from mindrlhf.algorithms import ppo_math
from mindrlhf.configs.ppo_config import PPOConfig
from mindrlhf.trainer import minibatch
from mindrlhf.trainer.advantages import Advantages
from mindrlhf.trainer.data_parallel import DataParallel
from mindrlhf.trainer.experience import Experience, PromptBatches  # noqa: F401  (PromptBatches: re-exported)
from mindrlhf.trainer.grpo_cells import CriticFreeActorLoss, SeparateScoring
from mindrlhf.trainer.policy_losses import PolicyLoss
from mindrlhf.trainer.ppo_cells import ActorLoss, CriticLoss, ScoringForwards
from mindrlhf.trainer.reward_sources import RewardSources, contains_eos
from mindrlhf.trainer.score_guard import NonFiniteScores
from mindrlhf.trainer.train_step import build_train_step
from mindrlhf.utils import signals
from mindrlhf.utils.memory import release_freed_heap
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
        critic: Optional[nn.Cell],
        reference: Optional[nn.Cell],
        reward: Optional[nn.Cell],
        dataset: Any,
        *,
        eos_token_id: int,
        pad_token_id: int,
        save_dir: str,
        loss_scale: Any = None,
        is_main: bool = True,
        tokenizer: Any = None,
    ):
        c = config
        if c.critic_free and critic is not None:  # the config decides: one script runs PPO or GRPO
            logger.warning(
                "advantage_estimator %s is critic-free: the critic given is not used", c.advantage_estimator
            )
            critic = None
        if not c.critic_free and critic is None:
            raise ValueError("advantage_estimator 'gae' needs a critic")
        if c.needs_reference and reference is None:
            raise ValueError("beta > 0 or init_kl_coef > 0 needs a reference model")
        reference = reference if c.needs_reference else None  # no KL uses it: do not hold it
        self.config = config
        self.actor, self.critic, self.reference, self.reward = actor, critic, reference, reward
        for frozen in (reference, reward):
            for p in frozen.get_parameters() if frozen is not None else ():
                p.requires_grad = False
        self.dataset = dataset
        self.eos_token_id, self.pad_token_id = eos_token_id, pad_token_id
        self.save_dir = save_dir
        self.is_main = is_main  # data parallel: ranks hold identical weights; only rank 0 writes files
        # Whitening, the score normaliser, the adaptive KL controller and the loss means see the global rollout
        # batch (world * rollout_batch_size), or each rank would shape rewards with its own statistics.
        self.ranks = DataParallel()
        self.rewards = RewardSources(c, reward is not None, tokenizer, c.max_prompt_length)
        self.critic_step = self.critic_optimizer = None
        self.train_group = 1  # rows sharing a prompt in the loss's forward (`_setup_critic_free`)
        if c.critic_free:
            self._setup_critic_free(loss_scale)
        else:
            self._setup_gae(loss_scale)
        self.kl_controller = ppo_math.make_kl_controller(
            c.adaptive_kl, c.init_kl_coef, c.kl_target, c.kl_horizon
        )
        self.score_normalizer = ppo_math.ScoreNormalizer(c.normalize_scores, c.score_clip)
        self.iteration = 0  # iterations completed
        self.score_guard = NonFiniteScores(c.max_nonfinite_iterations)  # NaN/inf reward scores
        # 3. advantages, chosen by the estimator (NaN/inf scores caught first: `score_guard`)
        self.advantages = Advantages(
            c, self.kl_controller, self.score_normalizer, self.score_guard, self.ranks
        )
        self.stopped_by: Optional[str] = None  # the signal that stopped `train()` early, if one did
        self.metrics: Optional[MetricsWriter] = None

    def _setup_gae(self, loss_scale) -> None:
        """PPO: scoring (one graph for reward, reference, critic); actor and critic steps; GAE advantages."""
        c, p = self.config, self.config.max_prompt_length
        steps, world = c.total_optimizer_steps, self.ranks.world
        if self.reward is not None and self.reference is not None:  # classic PPO: one graph
            scoring = ScoringForwards(self.reference, self.reward, self.critic, p, c.temperature)
            self._score = lambda seq, mask: tuple(_np(x) for x in scoring(Tensor(seq), Tensor(mask)))
        else:
            self._score = SeparateScoring(self.reward, self.reference, self.critic, p, c.temperature)
        actor_loss = ActorLoss(self.actor, p, c.temperature, c.cliprange, c.entropy_coef, c.ptx_coef, world)
        self.actor_step, self.actor_optimizer, _ = build_train_step(
            actor_loss, self.actor.trainable_params(), c.actor_lr, steps, c, loss_scale, "actor"
        )
        critic_loss = CriticLoss(self.critic, p, c.cliprange_value, c.vf_coef, world)
        self.critic_step, self.critic_optimizer, _ = build_train_step(
            critic_loss, self.critic.trainable_params(), c.critic_lr, steps, c, loss_scale, "critic"
        )
        self._update = functools.partial(minibatch.ppo_update, self.actor_step, self.critic_step)

    def _setup_critic_free(self, loss_scale) -> None:
        """GRPO / Dr. GRPO / RLOO: a reward-model graph and a reference graph only when they exist; one actor step."""
        c, p, g = self.config, self.config.max_prompt_length, self.config.num_generations
        # Each prompt's G rows share its forward (`ResponseLogprobs`): in scoring always, in the loss when the
        # mini-batches hold whole groups (`minibatch.epoch_order`).
        self._score = SeparateScoring(self.reward, self.reference, None, p, c.temperature, g)
        policy = PolicyLoss(c.clip_low, c.clip_high, c.loss_agg, c.ratio_level, c.max_new_tokens)
        group = g if c.mini_batch_size % g == 0 else 1
        actor_loss = CriticFreeActorLoss(
            self.actor, p, c.temperature, policy, c.beta, c.entropy_coef, self.ranks.world, group
        )
        self.train_group = actor_loss.group_size  # 1: mini-batches of shuffled rows, the plain forward
        steps = c.total_optimizer_steps
        self.actor_step, self.actor_optimizer, _ = build_train_step(
            actor_loss, self.actor.trainable_params(), c.actor_lr, steps, c, loss_scale, "actor"
        )
        self._update = functools.partial(
            minibatch.critic_free_update, self.actor_step, mask_truncated=c.mask_truncated_completions,
            group_size=self.train_group, prompt_length=p,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------------ experience
    def _generate(self, batch: Dict[str, np.ndarray]):
        """1. Sample num_generations responses per prompt (rows of a prompt contiguous, one prefill per prompt):
        `generate` always returns max_new_tokens response columns (rows that stop early are padded), so later
        graphs keep one shape. The seed depends on the seed, the iteration and the rank: deterministic, and
        different on every data-parallel rank (one process keeps its old seeds)."""
        from mindrlhf.generation import generate

        c = self.config
        out = generate(
            self.actor, batch["prompt_ids"], batch["prompt_mask"], num_return_sequences=c.num_generations,
            max_new_tokens=c.max_new_tokens, do_sample=True, temperature=c.temperature, top_k=c.top_k,
            top_p=c.top_p, eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id,
            seed=self.sampling_seed(),
        )  # fmt: skip
        sequences, response_mask, logprobs = _np(out.sequences), _np(out.response_mask), _np(out.logprobs)
        return sequences.astype(np.int32), response_mask.astype(np.float32), logprobs.astype(np.float32)

    def sampling_seed(self) -> int:
        """Sampling seed of this iteration on this rank: `(seed * 100003 + iteration) * world + rank`."""
        return (self.config.seed * 100_003 + self.iteration) * self.ranks.world + self.ranks.rank

    def make_experience(self, batch: Dict[str, np.ndarray]) -> Experience:
        """Steps 1-3 for one rollout batch of prompts, each sampled num_generations times (timings in
        `self.timings`)."""
        t0 = time.perf_counter()
        g = self.config.num_generations
        sequences, response_mask, old_logprobs = self._generate(batch)  # 1. generate, G rows per prompt
        batch = {k: np.repeat(v, g, axis=0) for k, v in batch.items()} if g > 1 else batch  # rows contiguous
        release_freed_heap()  # what compiles and buffers freed goes back to the OS (utils/memory.py)
        attention_mask = np.concatenate([batch["prompt_mask"], response_mask], 1).astype(np.int32)
        t1 = time.perf_counter()
        rm_scores, ref_logprobs, values = self._score(sequences, attention_mask)  # 2. score
        release_freed_heap()
        p = self.config.max_prompt_length
        has_eos = contains_eos(sequences[:, p:], response_mask, self.eos_token_id)
        scores, reward_metrics = self.rewards(batch, sequences, response_mask, rm_scores, has_eos)
        scores = scores.astype(np.float32)
        t2 = time.perf_counter()
        scores = self.advantages.finite(scores, self.iteration)  # NaN/inf: 0, out of statistics and losses
        # No reference model (no KL is used): the KL terms are then exactly 0.
        ref_logprobs = old_logprobs.copy() if ref_logprobs is None else ref_logprobs * response_mask
        values = None if values is None else values * response_mask
        rewards, advantages, returns = self.advantages(
            scores, old_logprobs, ref_logprobs, values, response_mask
        )  # 3
        response_mask = (
            response_mask * self.advantages.ok[:, None]
        )  # rows with a NaN/inf score: out of the losses
        self.timings = {"generate": t1 - t0, "score": t2 - t1, "advantages": time.perf_counter() - t2}
        f32 = np.float32

        def opt(name, dtype):
            return batch[name].astype(dtype) if name in batch else None

        return Experience(
            sequences=sequences,
            attention_mask=attention_mask,
            response_mask=response_mask,
            old_logprobs=old_logprobs,
            ref_logprobs=ref_logprobs.astype(f32),
            old_values=None if values is None else values.astype(f32),
            scores=scores,
            rewards=rewards.astype(f32),
            advantages=advantages.astype(f32),
            returns=None if returns is None else returns.astype(f32),
            pretrain_ids=opt("pretrain_ids", np.int32),
            pretrain_mask=opt("pretrain_mask", np.int32),
            loss_mask=opt("loss_mask", f32),
            has_eos=has_eos,
            reward_metrics=reward_metrics,
        )

    # ------------------------------------------------------------------------------------------ optimise
    def train_step(self, exp: Experience) -> Dict[str, float]:
        """4. ppo_epochs passes of shuffled mini-batches; per mini-batch one actor update (and one critic update
        with gae)."""
        c = self.config
        if self.advantages.no_update:  # every reward score was NaN/inf: nothing to learn from
            return {}
        b = exp.sequences.shape[0]
        sums: Dict[str, list] = {}
        first: Dict[str, float] = {}
        for epoch in range(c.ppo_epochs):
            order = minibatch.epoch_order(b, self.train_group, [c.seed, self.iteration, epoch])
            for mb in range(c.num_mini_batches):
                idx = order[mb * c.mini_batch_size : (mb + 1) * c.mini_batch_size]
                lr = self.actor_step.current_lr()
                loss, overflow, row, a = self._update(exp, idx)
                self._log_batch(mb, epoch, loss, lr, overflow)
                first = first or a  # logprob_diff: before any update, rollout and training log-probs agree
                for key, value in row.items():
                    sums.setdefault(key, []).append(float(value))
        release_freed_heap()
        out = {k: float(np.mean(v)) for k, v in sums.items()}
        out["ppo/logprob_diff/max"] = first["logprob_diff_max"]
        out["ppo/logprob_diff/mean"] = first["logprob_diff_mean"]
        out["ppo/lr/actor"] = self.actor_step.current_lr()
        if self.critic_step is not None:
            out["ppo/lr/critic"] = self.critic_step.current_lr()
        out["ppo/loss_scale/actor"] = self.actor_step.state_dict()["loss_scale"]
        return out

    def _log_batch(self, mb, epoch, loss, lr, overflow) -> None:
        log_line.info(
            "PPO Batch: %d | PPO Epoch: %d | loss: [%.6f] | lr: [%.6g] | is overflow: %s | loss scale: %s",
            mb, epoch, float(loss.asnumpy()), lr, overflow, self.actor_step.state_dict()["loss_scale"],
        )  # fmt: skip

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
        return minibatch.experience_metrics(
            exp, self.kl_controller.value, self.reference is not None, self.config.num_generations
        )

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
            self.adapt_kl(last.get("objective/kl", 0.0), exp)  # 5 (no reference: no KL, beta stays 0)
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
            bar.set_postfix(score=f"{last['env/score_mean']:.3f}", kl=f"{last.get('objective/kl', 0.0):.3f}")
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
        models, optimizers = {"actor": self.actor}, {"actor": self.actor_optimizer}
        if self.critic is not None:  # critic-free runs hold and save no critic
            models["critic"], optimizers["critic"] = self.critic, self.critic_optimizer
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
            "config": self.config.to_dict(),
        }
        if self.critic_step is not None:
            state["critic_step"] = self.critic_step.state_dict()
        return save_run_state(self.save_dir, self.iteration, models, optimizers, state)

    def resume(self, save_dir: str) -> None:
        """Restore everything `save` wrote under `save_dir`; training then continues exactly."""
        models, optimizers = self._state()
        state = load_run_state(save_dir, models, optimizers)
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.score_normalizer.load_state_dict(state["score_normalizer"])
        self.score_guard.streak = int(state.get("nonfinite_streak", 0))
        self.actor_step.load_state_dict(state["actor_step"])
        if self.critic_step is not None:
            self.critic_step.load_state_dict(state["critic_step"])
        self.iteration = int(state["step"])
