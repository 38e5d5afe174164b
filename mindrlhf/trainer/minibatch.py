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
from mindrlhf.trainer.ppo_cells import ActorLoss, CriticLoss, check_groups
from mindrlhf.trainer.reward_sources import zero_std_fraction


def epoch_order(rows: int, group_size: int, seed) -> np.ndarray:
    """Row order `[rows]` of one epoch's mini-batches, from `np.random.default_rng(seed)`.

    group_size 1: a permutation of the rows, as TRL (`shuffle_sequence_dict` on the generation batch before it
    is split into optimiser steps) and OpenRLHF (a shuffled DataLoader over the replay buffer's samples) do.
    group_size G > 1: a permutation of the groups, each group's G rows kept contiguous and in order (verl's
    actor also keeps them whole: it splits the batch in order, mini-batches counted in prompts x n). Whole groups
    let the loss compute each prompt once per group (`ResponseLogprobs(group_size=G)`), the same arithmetic
    saving as in scoring; a mini-batch is still a uniform random draw of prompts, only not of single rows.
    """
    rng = np.random.default_rng(seed)
    if group_size <= 1:
        return rng.permutation(rows)
    groups = rng.permutation(rows // group_size)
    return (groups[:, None] * group_size + np.arange(group_size)).reshape(-1)


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
    actor_step,
    exp: Experience,
    idx: np.ndarray,
    mask_truncated: bool,
    group_size: int = 1,
    prompt_length: int = 0,
) -> Tuple[object, bool, Dict, Dict]:
    """One actor step (`CriticFreeActorLoss`) on rows `idx` -> (loss, overflow, metric row, actor metrics).

    mask_truncated: responses without EOS get a zero loss mask (TRL's `mask_truncated_completions`); they still
    count as rows in the per-row aggregations, as in TRL. group_size G > 1: the loss graph shares each group's
    prompt, so the rows are first checked (numpy) to be groups of G equal prompts; ValueError if not (an
    Experience not built by `make_experience`; a plain graph would be a second compile for a case that the
    trainer never produces).
    """
    check_groups(exp.sequences[idx], exp.attention_mask[idx], prompt_length, group_size)
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
