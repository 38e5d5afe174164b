"""DPO losses (mindrlhf.algorithms.dpo_loss), TRL's contract, against values worked out by hand."""

import math

import numpy as np
import pytest

from mindrlhf.algorithms import dpo_loss

# h = (pc - pr) - (rc - rr) = [1 - 0, 0 - (-1.5), -2 - 0] = [1, 1.5, -2]
PC = np.array([-1.0, -2.0, -3.0])
PR = np.array([-2.0, -2.0, -1.0])
RC = np.array([-1.5, -2.0, -2.0])
RR = np.array([-1.5, -0.5, -2.0])
H = [1.0, 1.5, -2.0]


def softplus(x):
    return math.log1p(math.exp(x))  # -logsigmoid(-x)


def close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-14)


def test_sigmoid():
    losses, chosen, rejected = dpo_loss(PC, PR, RC, RR, beta=0.1)
    close(losses, [softplus(-0.1 * h) for h in H])  # -logsigmoid(beta h) = log(1 + exp(-beta h))
    close(chosen, [0.05, 0.0, -0.1])  # 0.1 * (pc - rc)
    close(rejected, [-0.05, -0.15, 0.1])  # 0.1 * (pr - rr)


def test_sigmoid_label_smoothing_cdpo():
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, label_smoothing=0.1)
    close(losses, [0.9 * softplus(-0.1 * h) + 0.1 * softplus(0.1 * h) for h in H])
    # ls = 0.5: the label carries no information, the loss is symmetric in h
    half, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, label_smoothing=0.5)
    flipped, _, _ = dpo_loss(PR, PC, RR, RC, beta=0.1, label_smoothing=0.5)
    close(half, flipped)


def test_sigmoid_is_stable_for_large_margins():
    big = np.array([1e4, -1e4])
    losses, _, _ = dpo_loss(big, np.zeros(2), np.zeros(2), np.zeros(2), beta=1.0)
    close(losses, [0.0, 1e4])


def test_ipo():
    losses, chosen, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type="ipo")
    close(losses, [(h - 5.0) ** 2 for h in H])  # 1 / (2 beta) = 5
    close(chosen, [0.05, 0.0, -0.1])


def test_hinge():
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type="hinge")
    close(losses, [0.9, 0.85, 1.2])  # 1 - 0.1 h
    losses, _, _ = dpo_loss(PC, PR, RC, RR, beta=1.0, loss_type="hinge")
    close(losses, [0.0, 0.0, 3.0])  # relu(1 - h)


def test_bad_options():
    with pytest.raises(ValueError, match="unknown DPO loss_type 'kto'"):
        dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type="kto")
    with pytest.raises(ValueError, match="beta must be > 0"):
        dpo_loss(PC, PR, RC, RR, beta=0.0)
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 0.5\]"):
        dpo_loss(PC, PR, RC, RR, beta=0.1, label_smoothing=0.7)
    with pytest.raises(ValueError, match="sigmoid"):
        dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type="ipo", label_smoothing=0.1)
