"""Critic-free RL math (mindrlhf.algorithms): group advantages, generalised policy loss, k3 KL term.

Every expected number below is worked out by hand in the comment next to it (float64, tight tolerances).
"""

import math

import numpy as np
import pytest

from mindrlhf.algorithms import (
    aggregate_loss,
    group_advantages,
    kl_in_loss,
    policy_loss,
)
from mindrlhf.algorithms import ppo_math as pm

RTOL = 1e-12
EPS = 1e-6


def close(actual, expected, rtol=RTOL, atol=1e-12):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol, atol=atol)


# ------------------------------------------------------------------------------------------- group_advantages


def test_grpo_group_of_four():
    # mean 3, deviations [-2, -1, 0, 3], unbiased var (4 + 1 + 0 + 9) / 3 = 14/3
    std = math.sqrt(14 / 3)
    close(group_advantages([1.0, 2.0, 3.0, 6.0], 4, "grpo"), np.array([-2, -1, 0, 3]) / (std + EPS))


def test_grpo_g2_and_eps_added_to_std():
    # G = 2: mean 2, unbiased std sqrt((1 + 1) / 1) = sqrt(2); eps is added to the std, not the variance
    close(group_advantages([1.0, 3.0], 2, "grpo"), [-1 / (math.sqrt(2) + EPS), 1 / (math.sqrt(2) + EPS)])
    close(
        group_advantages([1.0, 3.0], 2, "grpo", eps=0.5),
        [-1 / (math.sqrt(2) + 0.5), 1 / (math.sqrt(2) + 0.5)],
    )


def test_dr_grpo_is_mean_centred_only():
    close(group_advantages([1.0, 2.0, 3.0, 6.0], 4, "dr_grpo"), [-2.0, -1.0, 0.0, 3.0])


def test_rloo_leave_one_out():
    # baselines: mean of the other three = 11/3, 10/3, 9/3, 6/3
    close(group_advantages([1.0, 2.0, 3.0, 6.0], 4, "rloo"), [1 - 11 / 3, 2 - 10 / 3, 3 - 3, 6 - 2])
    close(group_advantages([1.0, 3.0], 2, "rloo"), [-2.0, 2.0])  # G = 2: the other one is the baseline


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
def test_groups_are_contiguous_and_equal_scores_give_exact_zeros(estimator):
    # 0.1 * 3 rounds: the group mean is not exactly 0.1, yet the advantages must be exactly 0 (and never NaN)
    scores = [0.1, 0.1, 0.1, 0.0, 1.0, 1.0]
    adv = group_advantages(scores, 3, estimator)
    np.testing.assert_array_equal(adv[:3], 0.0)
    assert np.all(np.isfinite(adv))
    # the second group [0, 1, 1] is computed on its own: mean 2/3
    expected = {
        "grpo": (np.array([0, 1, 1]) - 2 / 3)
        / (math.sqrt(1 / 3) + EPS),  # unbiased var (4/9+1/9+1/9)/2 = 1/3
        "dr_grpo": np.array([0, 1, 1]) - 2 / 3,
        "rloo": np.array([0 - 1, 1 - 0.5, 1 - 0.5]),
    }[estimator]
    close(adv[3:], expected)


def test_dr_grpo_group_of_one_gives_zeros():
    np.testing.assert_array_equal(group_advantages([3.0, -1.0], 1, "dr_grpo"), [0.0, 0.0])


@pytest.mark.parametrize("estimator", ["grpo", "rloo"])
def test_group_of_one_is_an_error(estimator):
    with pytest.raises(ValueError, match="at least 2 samples"):
        group_advantages([1.0, 2.0], 1, estimator)


def test_bad_arguments():
    with pytest.raises(ValueError, match="not a whole number of groups of 4"):
        group_advantages(np.zeros(6), 4, "grpo")
    with pytest.raises(ValueError, match="unknown advantage estimator 'gae'"):
        group_advantages(np.zeros(4), 2, "gae")
    with pytest.raises(ValueError, match=r"scores must be \[B\]"):
        group_advantages(np.zeros((2, 2)), 2, "grpo")
    with pytest.raises(ValueError, match="positive integer"):
        group_advantages(np.zeros(4), 0, "grpo")


# ---------------------------------------------------------------------------------------------- policy_loss


def random_batch(seed=0, b=4, t=6):
    rng = np.random.default_rng(seed)
    mask = (np.arange(t)[None] < np.array([t, 3, 1, 5])[:b, None]).astype(np.float64)
    old = rng.normal(-2.0, 0.5, size=(b, t))
    return old + rng.uniform(-0.5, 0.5, size=(b, t)), old, rng.normal(size=(b, t)), mask


def test_defaults_equal_ppo_math_policy_loss():
    logprobs, old, adv, mask = random_batch()
    ours = policy_loss(logprobs, old, adv, mask)
    ref = pm.policy_loss(logprobs, old, adv, mask, 0.2)
    assert 0 < ref[1] < 1  # both branches exercised
    close(ours[:2], ref[:2])
    close(ours.approx_kl, ref[2])
    close(ours.clipfrac_low + ours.clipfrac_high, ours.clipfrac)
    # a [B] advantage is broadcast over the tokens of its row
    adv_row = adv[:, 0]
    close(
        policy_loss(logprobs, old, adv_row, mask)[:2],
        pm.policy_loss(logprobs, old, adv_row[:, None] + 0 * adv, mask, 0.2)[:2],
    )


def single_token_batch():
    """Four one-token responses (logprobs = log r, old = 0): each side of each clip edge with clip 0.2.

    row  A   r     -A r   -A clip(r, 0.8, 1.2)   max    clipped?
    0   +1  1.5   -1.5   -1.2                   -1.2   high
    1   +1  0.5   -0.5   -0.8                   -0.5   no
    2   -1  0.5    0.5    0.8                    0.8   low
    3   -1  1.5    1.5    1.2                    1.5   no
    4   +1  1.19  -1.19  -1.19                  -1.19  no (just inside the upper edge)
    5   -1  0.81   0.81   0.81                   0.81  no (just inside the lower edge)
    """
    r = np.array([1.5, 0.5, 0.5, 1.5, 1.19, 0.81])
    adv = np.array([1.0, 1.0, -1.0, -1.0, 1.0, -1.0])
    return np.log(r)[:, None], np.zeros((6, 1)), adv, np.ones((6, 1)), r


def test_clip_edges_both_sides_single_token_responses():
    logprobs, old, adv, mask, r = single_token_batch()
    out = policy_loss(logprobs, old, adv, mask)
    close(out.loss, (-1.2 - 0.5 + 0.8 + 1.5 - 1.19 + 0.81) / 6)
    close([out.clipfrac, out.clipfrac_low, out.clipfrac_high], [2 / 6, 1 / 6, 1 / 6])
    close(out.approx_kl, np.mean(r - 1 - np.log(r)))


def test_clip_higher():
    # clip_high 0.6: row 0 (r = 1.5 < 1.6) is no longer clipped, its term is -1.5; the lower edge is unchanged
    logprobs, old, adv, mask, _ = single_token_batch()
    out = policy_loss(logprobs, old, adv, mask, clip_low=0.2, clip_high=0.6)
    close(out.loss, (-1.5 - 0.5 + 0.8 + 1.5 - 1.19 + 0.81) / 6)
    close([out.clipfrac, out.clipfrac_low, out.clipfrac_high], [1 / 6, 1 / 6, 0.0])
    # clip_low 0.6: row 2 (r = 0.5 > 0.4) is no longer clipped; clip_high defaults to clip_low (row 0 free too)
    out = policy_loss(logprobs, old, adv, mask, clip_low=0.6)
    close(out.loss, (-1.5 - 0.5 + 0.5 + 1.5 - 1.19 + 0.81) / 6)
    close(out.clipfrac, 0.0)


AGG_MASK = np.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])


def agg_batch(junk):
    """Ratio 1 everywhere real, advantages [1, -2] per row: per-token losses row 0 [-1, -1, -1], row 1 [2]."""
    logprobs = np.array([[-1.0, -2.0, -3.0], [-0.5, junk, -junk]])
    old = np.array([[-1.0, -2.0, -3.0], [-0.5, -junk, junk]])
    adv = np.array([[1.0, 1.0, 1.0], [-2.0, junk, junk]])
    return logprobs, old, adv


@pytest.mark.parametrize("junk", [0.0, 1e30, np.nan], ids=["zeros", "huge", "nan"])
@pytest.mark.parametrize(
    "loss_agg, max_len, expected",
    [
        ("token_mean", None, (-3 + 2) / 4),  # 4 real tokens
        ("seq_mean_token_mean", None, (-1 + 2) / 2),  # row means -1 and 2
        ("seq_mean_token_sum_norm", None, (-3 + 2) / (2 * 3)),  # B * T
        ("seq_mean_token_sum_norm", 5, (-3 + 2) / (2 * 5)),  # B * max_len
    ],
)
def test_aggregations_and_junk_under_the_mask(loss_agg, max_len, expected, junk):
    logprobs, old, adv = agg_batch(junk)
    out = policy_loss(logprobs, old, adv, AGG_MASK, loss_agg=loss_agg, max_len=max_len)
    close(out.loss, expected)
    close([out.clipfrac, out.approx_kl], [0.0, 0.0])
    # the same aggregation of a per-token loss matrix directly
    per_token = np.array([[-1.0, -1.0, -1.0], [2.0, junk, junk]])
    close(aggregate_loss(per_token, AGG_MASK, loss_agg, max_len), expected)


def test_seq_mean_token_mean_row_without_tokens_counts_as_zero():
    mask = np.array([[1.0, 1.0], [0.0, 0.0]])
    close(aggregate_loss(np.array([[2.0, 4.0], [7.0, 7.0]]), mask, "seq_mean_token_mean"), (3.0 + 0.0) / 2)
    close(aggregate_loss(np.ones((2, 2)), np.zeros((2, 2)), "token_mean"), 0.0)


@pytest.mark.parametrize("junk", [0.0, 1e30, np.nan], ids=["zeros", "huge", "nan"])
def test_sequence_level_ratio(junk):
    # token log-ratios row 0 [0.2, 0.4 | junk], row 1 [-0.3 | junk, junk]: sequence ratios exp(0.3), exp(-0.3)
    mask = np.array([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    old = np.full((2, 3), -1.0)
    logprobs = old + np.array([[0.2, 0.4, junk], [-0.3, junk, junk]])
    adv = np.array([1.0, -1.0])
    out = policy_loss(logprobs, old, adv, mask, ratio_level="sequence")
    # row 0: A = 1, r = 1.3499 > 1.2 -> -1.2 on both tokens; row 1: A = -1, r = 0.7408 < 0.8 -> 0.8
    close(out.loss, (-1.2 * 2 + 0.8) / 3)
    close([out.clipfrac, out.clipfrac_low, out.clipfrac_high], [1.0, 1 / 3, 2 / 3])
    k3 = [math.exp(x) - 1 - x for x in (0.2, 0.4, -0.3)]  # approx_kl stays token-level
    close(out.approx_kl, sum(k3) / 3)
    seq = policy_loss(logprobs, old, adv, mask, ratio_level="sequence", loss_agg="seq_mean_token_mean")
    close(seq.loss, (-1.2 + 0.8) / 2)  # GSPO's per-sequence mean
    wide = policy_loss(logprobs, old, adv, mask, clip_high=0.5, ratio_level="sequence")
    close(wide.loss, (-2 * math.exp(0.3) + 0.8) / 3)  # r = 1.3499 < 1.5: unclipped on row 0
    # token-level ratios of the same data: exp(0.2), exp(0.4) < 1.5 unclipped on row 0, row 1 unchanged
    token = policy_loss(logprobs, old, adv, mask, clip_high=0.5)
    close(token.loss, (-math.exp(0.2) - math.exp(0.4) + 0.8) / 3)


def test_policy_loss_bad_options():
    logprobs, old, adv, mask = random_batch()
    with pytest.raises(ValueError, match="unknown loss_agg"):
        policy_loss(logprobs, old, adv, mask, loss_agg="mean")
    with pytest.raises(ValueError, match="unknown ratio_level"):
        policy_loss(logprobs, old, adv, mask, ratio_level="seq")
    with pytest.raises(ValueError, match="clip_low"):
        policy_loss(logprobs, old, adv, mask, clip_low=1.0)
    with pytest.raises(ValueError, match="max_len"):
        policy_loss(logprobs, old, adv, mask, loss_agg="seq_mean_token_sum_norm", max_len=0)


# ----------------------------------------------------------------------------------------------- kl_in_loss


def test_kl_in_loss_k3_by_hand():
    logprobs = np.array([[-1.0, -2.0, -1.0]])
    ref = np.array([[-1.0, -1.0, -2.0]])
    # d = ref - logp = [0, 1, -1]: exp(d) - d - 1 = [0, e - 2, 1/e]
    close(kl_in_loss(logprobs, ref), [[0.0, math.e - 2, 1 / math.e]])
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    assert np.all(kl_in_loss(a, b) >= 0)
    close(kl_in_loss(a, b), pm.kl_penalty(a, b, "k3"))
