"""Step 4 of an RL iteration on one mini-batch (PPO with a critic, or critic-free), and the rollout metrics.

Free functions over an `Experience` and the jitted train steps, so `PPOTrainer` keeps only the loop. Every metric
is read by name from the loss cell's `METRICS`.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import numpy as np
from mindspore import Tensor

from mindrlhf.algorithms import ppo_math
from mindrlhf.trainer.experience import Experience
from mindrlhf.trainer.grpo_cells import CriticFreeActorLoss
from mindrlhf.trainer.losses import metrics_dict
from mindrlhf.trainer.ppo_cells import ActorLoss, CriticLoss
from mindrlhf.trainer.reward_sources import zero_std_fraction


def ppo_update(actor_step, critic_step, exp: Experience, idx: np.ndarray) -> Tuple[object, bool, Dict, Dict]:
    """One actor and one critic step on rows `idx` -> (actor loss, overflow, metric row, actor metrics)."""
    t = {
        f.name: Tensor(getattr(exp, f.name)[idx])
        for f in dataclasses.fields(exp)
        if isinstance(getattr(exp, f.name), np.ndarray)
    }  # no deep copy
    if "pretrain_ids" not in t:  # a prompt dataset: no ptx text (ptx_coef is 0, the graph never reads these)
        t["pretrain_ids"] = t["pretrain_mask"] = Tensor(np.zeros((len(idx), 2), np.int32))
        t["loss_mask"] = Tensor(np.zeros((len(idx), 2), np.float32))
    loss, a_metrics, overflow, a_norm = actor_step(
        t["sequences"], t["attention_mask"], t["response_mask"], t["old_logprobs"], t["advantages"],
        t["pretrain_ids"], t["pretrain_mask"], t["loss_mask"],
    )  # fmt: skip
    v_loss, v_metrics, v_overflow, v_norm = critic_step(
        t["sequences"], t["attention_mask"], t["response_mask"], t["old_values"], t["returns"]
    )
    overflow = bool(overflow.asnumpy())
    a = metrics_dict(ActorLoss.METRICS, a_metrics)
    v = metrics_dict(CriticLoss.METRICS, v_metrics)
    row = {
        "ppo/loss/actor": float(loss.asnumpy()), "ppo/loss/policy": a["policy_loss"],
        "ppo/policy/clipfrac": a["clipfrac"], "ppo/policy/approx_kl": a["approx_kl"],
        "ppo/policy/entropy": a["entropy"], "ppo/loss/ptx": a["ptx_loss"],
        "ppo/loss/value": v["value_loss"], "ppo/val/clipfrac": v["value_clipfrac"],
        "ppo/val/mean": v["value_mean"], "ppo/loss/critic": float(v_loss.asnumpy()),
        "ppo/grad_norm/actor": float(a_norm.asnumpy()), "ppo/grad_norm/critic": float(v_norm.asnumpy()),
        "ppo/overflow/actor": float(overflow), "ppo/overflow/critic": float(bool(v_overflow.asnumpy())),
    }  # fmt: skip
    return loss, overflow, row, a


def critic_free_update(
    actor_step, exp: Experience, idx: np.ndarray, mask_truncated: bool
) -> Tuple[object, bool, Dict, Dict]:
    """One actor step (`CriticFreeActorLoss`) on rows `idx` -> (loss, overflow, metric row, actor metrics).

    mask_truncated: responses without EOS get a zero loss mask (TRL's `mask_truncated_completions`); they still
    count as rows in the per-row aggregations, as in TRL.
    """
    mask = exp.response_mask[idx]
    if mask_truncated:
        mask = mask * exp.has_eos[idx][:, None].astype(mask.dtype)
    loss, a_metrics, overflow, a_norm = actor_step(
        Tensor(exp.sequences[idx]), Tensor(exp.attention_mask[idx]), Tensor(mask),
        Tensor(exp.old_logprobs[idx]), Tensor(exp.advantages[idx]), Tensor(exp.ref_logprobs[idx]),
    )  # fmt: skip
    overflow = bool(overflow.asnumpy())
    a = metrics_dict(CriticFreeActorLoss.METRICS, a_metrics)
    row = {
        "ppo/loss/actor": float(loss.asnumpy()), "ppo/loss/policy": a["policy_loss"],
        "ppo/policy/clipfrac": a["clipfrac"], "ppo/policy/clipfrac_low": a["clipfrac_low"],
        "ppo/policy/clipfrac_high": a["clipfrac_high"], "ppo/policy/approx_kl": a["approx_kl"],
        "ppo/policy/entropy": a["entropy"], "grpo/kl": a["kl"],
        "ppo/grad_norm/actor": float(a_norm.asnumpy()), "ppo/overflow/actor": float(overflow),
    }  # fmt: skip
    return loss, overflow, row, a


def experience_metrics(
    exp: Experience, kl_coef: float, has_reference: bool, num_generations: int
) -> Dict[str, float]:
    """Rollout statistics of one rank: scores, rewards per source, lengths, truncation, KL, group signal."""
    mask = exp.response_mask
    lengths = mask.sum(1)
    out = {
        "env/score_mean": float(exp.scores.mean()),
        "env/score_std": float(exp.scores.std()),
        "env/reward_mean": float(exp.rewards.sum(1).mean()),
        "env/reward_std": float(exp.rewards.sum(1).std()),
        "objective/kl_coef": float(kl_coef),
        "response/length_mean": float(lengths.mean()),
        "response/length_max": float(lengths.max()),
        **(exp.reward_metrics or {}),
    }
    if exp.has_eos is not None:  # (an Experience built by hand may not say)
        out["response/clipped_fraction"] = float(1.0 - exp.has_eos.mean())  # hit max_new_tokens without EOS
    if has_reference:
        out["objective/kl"] = float(((exp.old_logprobs - exp.ref_logprobs) * mask).sum(1).mean())  # k1
    if exp.returns is not None:
        out["ppo/returns/mean"] = float(ppo_math.masked_mean(exp.returns, mask))
        out["ppo/val/explained_variance"] = float(
            ppo_math.explained_variance(exp.old_values, exp.returns, mask)
        )
    if num_generations > 1:
        out["grpo/zero_std_fraction"] = zero_std_fraction(exp.scores, num_generations)
        out["grpo/advantages/abs_mean"] = float(np.abs(exp.advantages).mean())
    return out
