"""Direct preference optimisation losses, in numpy (the MindSpore twin is `mindrlhf.trainer.policy_losses`).

This module never imports mindspore.

References:
    [DPO]   Rafailov et al. 2023, "Direct Preference Optimization: Your Language Model is Secretly a Reward
            Model", arXiv:2305.18290 (eq. 7).
    [cDPO]  Mitchell 2023, "A note on DPO with noisy preferences & relationship to IPO" (conservative DPO:
            label smoothing).
    [IPO]   Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human Preferences",
            arXiv:2310.12036 (eq. 17).
    [SLiC]  Zhao et al. 2023, "SLiC-HF: Sequence Likelihood Calibration with Human Feedback",
            arXiv:2305.10425 (hinge / rank calibration loss).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")
"""Names accepted by `dpo_loss` (TRL's `loss_type` names)."""


def log_sigmoid(x: np.ndarray) -> np.ndarray:
    """log(1 / (1 + exp(-x))) without overflow: -log(1 + exp(-x)) = -logaddexp(0, -x)."""
    return -np.logaddexp(0.0, -np.asarray(x, dtype=np.float64))


def check_dpo_options(beta: float, loss_type: str, label_smoothing: float) -> None:
    """Raise ValueError for options `dpo_loss` does not define (shared with the MindSpore cell)."""
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; choose one of {', '.join(DPO_LOSS_TYPES)}")
    if not beta > 0:
        raise ValueError(f"DPO beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"label_smoothing applies to loss_type 'sigmoid' (cDPO) only, not {loss_type!r}")


def dpo_loss(
    policy_chosen_logps: np.ndarray,
    policy_rejected_logps: np.ndarray,
    ref_chosen_logps: np.ndarray,
    ref_rejected_logps: np.ndarray,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pair DPO losses and implicit rewards. Every input: [B] summed log-probs of a whole response
    (pc, pr under the policy; rc, rr under the frozen reference). Returns (losses, chosen_rewards,
    rejected_rewards), each [B] float64; the caller takes the mean.

        h = (pc - pr) - (rc - rr)                                   (policy log-ratio margin over the reference)
        "sigmoid"  -logsigmoid(beta h) (1 - ls) - logsigmoid(-beta h) ls        [DPO] eq. 7, [cDPO] for ls > 0
        "ipo"      (h - 1 / (2 beta))^2                                          [IPO] eq. 17
        "hinge"    relu(1 - beta h)                                              [SLiC]
        chosen_rewards = beta (pc - rc),  rejected_rewards = beta (pr - rr)      ([DPO] section 5 implicit reward)

    Convention: TRL's `DPOTrainer.dpo_loss` (same names, same formulas, same reward definition; the rewards are
    metrics, detached in the MindSpore twin). OpenRLHF's `DPOLoss` is the same for sigmoid/ipo. As in TRL, the
    IPO length normalisation (average instead of summed log-probs) is the caller's: pass averaged log-probs.
    label_smoothing (the assumed probability that a preference label is flipped) must be in [0, 0.5] and is
    only defined for "sigmoid" (TRL ignores it elsewhere; we refuse it, so a config cannot silently lose it).
    """
    check_dpo_options(beta, loss_type, label_smoothing)
    pc, pr, rc, rr = (
        np.asarray(x, dtype=np.float64)
        for x in (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    )
    h = (pc - pr) - (rc - rr)
    if loss_type == "sigmoid":
        losses = -log_sigmoid(beta * h) * (1.0 - label_smoothing) - log_sigmoid(-beta * h) * label_smoothing
    elif loss_type == "ipo":
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:  # hinge
        losses = np.maximum(1.0 - beta * h, 0.0)
    return losses, beta * (pc - rc), beta * (pr - rr)
