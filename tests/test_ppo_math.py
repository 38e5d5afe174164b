"""PPO math against hand-computed values. The arithmetic is written next to each expected number."""

import json
import math

import numpy as np
import pytest

from mindrlhf.algorithms import ppo_math as pm

RTOL = 1e-12  # float64 arithmetic on a handful of numbers: anything looser would hide a wrong formula


def close(actual, expected, rtol=RTOL, atol=1e-12):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def test_algorithms_never_import_mindspore():
    import ast
    import pathlib

    root = pathlib.Path(pm.__file__).parent
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n.split(".")[0] == "mindspore" for n in names), f"{path} imports mindspore"


# ---------------------------------------------------------------------------------------------------- masked stats


def test_masked_mean_ignores_padding_and_empty_mask_is_zero():
    x = np.array([[1.0, 2.0, 100.0], [4.0, -50.0, -50.0]])
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    close(pm.masked_mean(x, mask), (1 + 2 + 4) / 3)
    close(pm.masked_mean(x, mask, axis=1), [1.5, 4.0])
    close(pm.masked_mean(x, np.zeros_like(mask)), 0.0)


def test_masked_whiten_hand_values():
    # masked-in values 1, 2, 3, 4: mean 2.5, deviations -1.5 -0.5 0.5 1.5, squares sum to 5,
    # unbiased var = 5 / 3; padding (100, -7) must not change anything and comes out as 0.
    x = np.array([[1.0, 2.0, 3.0], [4.0, 100.0, -7.0]])
    mask = np.array([[1, 1, 1], [1, 0, 0]])
    std = math.sqrt(5.0 / 3.0 + 1e-8)
    close(pm.masked_var(x, mask), 5.0 / 3.0)
    close(pm.masked_var(x, mask, unbiased=False), 5.0 / 4.0)
    w = pm.masked_whiten(x, mask)
    close(w, [[-1.5 / std, -0.5 / std, 0.5 / std], [1.5 / std, 0.0, 0.0]])
    close(pm.masked_mean(w, mask), 0.0)
    # shift_mean=False keeps the mean 2.5: scale only.
    close(
        pm.masked_whiten(x, mask, shift_mean=False),
        [[-1.5 / std + 2.5, -0.5 / std + 2.5, 0.5 / std + 2.5], [1.5 / std + 2.5, 0, 0]],
    )


def test_masked_var_single_token_is_zero_not_nan():
    close(pm.masked_var(np.array([[3.0, 9.0]]), np.array([[1, 0]])), 0.0)
    close(pm.masked_whiten(np.array([[3.0, 9.0]]), np.array([[1, 0]])), [[0.0, 0.0]])


# ------------------------------------------------------------------------------------------------ KL and rewards


def test_kl_estimators_hand_values():
    logp = np.array([[-1.0, -2.0]])
    ref = np.array([[-1.2, -1.0]])
    # log_ratio = [0.2, -1.0]
    close(pm.kl_penalty(logp, ref, "k1"), [[0.2, -1.0]])
    close(pm.kl_penalty(logp, ref, "k2"), [[0.5 * 0.04, 0.5 * 1.0]])
    close(pm.kl_penalty(logp, ref, "mse"), [[0.02, 0.5]])
    close(pm.kl_penalty(logp, ref, "abs"), [[0.2, 1.0]])
    # k3 = exp(-lr) - 1 + lr: exp(-0.2) - 0.8 = 0.018730753077981..., exp(1) - 2 = 0.718281828459045...
    close(pm.kl_penalty(logp, ref, "k3"), [[0.018730753077981859, 0.71828182845904524]])
    with pytest.raises(ValueError, match="kl_estimator"):
        pm.kl_penalty(logp, ref, "k4")


def test_k1_and_k3_are_unbiased_for_kl_policy_to_reference():
    # Exact expectation over a 4-token vocabulary, tokens drawn from the policy: both must equal
    # KL(pi || pi_ref) = sum pi log(pi / pi_ref), and not the reverse KL(pi_ref || pi).
    pi = np.array([0.1, 0.2, 0.3, 0.4])
    ref = np.array([0.25, 0.25, 0.25, 0.25])
    kl = float(np.sum(pi * np.log(pi / ref)))
    reverse = float(np.sum(ref * np.log(ref / pi)))
    assert abs(kl - reverse) > 1e-3
    for est in ("k1", "k3"):
        per_token = pm.kl_penalty(np.log(pi)[None], np.log(ref)[None], est)[0]
        close(np.sum(pi * per_token), kl)


@pytest.mark.parametrize("estimator", pm.KL_ESTIMATORS)
def test_kl_sign_raising_logprobs_above_reference_lowers_reward(estimator):
    ref = np.array([[-2.0, -1.5, -1.0]])
    mask = np.ones((1, 3))
    same = pm.compute_rewards(ref, ref, np.array([0.0]), mask, 0.1, estimator)
    higher = pm.compute_rewards(ref + 0.5, ref, np.array([0.0]), mask, 0.1, estimator)
    close(same, 0.0)
    assert np.all(higher < 0.0)


def test_compute_rewards_eos_mid_sequence_and_one_token_response():
    logp = np.array([[-1.0, -0.5, -2.0], [-0.3, -9.0, -9.0]])
    ref = np.array([[-1.2, -0.5, -1.0], [-0.7, -1.0, -1.0]])
    mask = np.array([[1, 1, 0], [1, 0, 0]])  # row 0 ends (EOS) at t=1, row 1 is a one-token response
    scores = np.array([3.0, -1.0])
    rewards = pm.compute_rewards(logp, ref, scores, mask, kl_coef=0.1, kl_estimator="k1")
    # row 0: k1 = [0.2, 0.0, (padding)] -> r = [-0.1*0.2, -0.1*0.0 + 3.0, 0] = [-0.02, 3.0, 0]
    # row 1: k1 = 0.4 -> r0 = -0.04 + (-1.0) = -1.04; padding stays 0 despite log-probs -9 vs -1
    close(rewards, [[-0.02, 3.0, 0.0], [-1.04, 0.0, 0.0]])


def test_last_token_index_and_empty_row():
    close(pm.last_token_index(np.array([[1, 1, 1], [1, 0, 0], [1, 1, 0]])), [2, 0, 1])
    with pytest.raises(ValueError, match="no response token"):
        pm.last_token_index(np.array([[1, 0], [0, 0]]))
    with pytest.raises(ValueError, match="scores"):
        pm.compute_rewards(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros(3), np.ones((2, 2)), 0.1)


# ------------------------------------------------------------------------------------------------------------ GAE


def test_gae_hand_values_with_eos_and_one_token_response():
    gamma, lam = 0.9, 0.8  # gamma * lam = 0.72
    rewards = np.array(
        [
            [0.1, -0.2, 0.3, 1.0],
            [0.1, 1.0, 5.0, 5.0],  # EOS at t=1: the 5.0s are padding
            [2.0, 7.0, 7.0, 7.0],  # one-token response
        ]
    )
    values = np.array(
        [
            [0.5, 0.4, 0.2, 0.6],
            [0.5, 0.4, 9.0, -7.0],  # 9 and -7 beyond the mask must not bootstrap
            [0.5, 3.0, 3.0, 3.0],
        ]
    )
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    adv, ret = pm.gae_advantages(rewards, values, mask, gamma, lam)
    # row 0: d3 = 1.0 + 0.9*0 - 0.6 = 0.4             A3 = 0.4
    #        d2 = 0.3 + 0.9*0.6 - 0.2 = 0.64          A2 = 0.64 + 0.72*0.4 = 0.928
    #        d1 = -0.2 + 0.9*0.2 - 0.4 = -0.42        A1 = -0.42 + 0.72*0.928 = 0.24816
    #        d0 = 0.1 + 0.9*0.4 - 0.5 = -0.04         A0 = -0.04 + 0.72*0.24816 = 0.1386752
    # row 1: d1 = 1.0 + 0.9*0 - 0.4 = 0.6             A1 = 0.6
    #        d0 = 0.1 + 0.9*0.4 - 0.5 = -0.04         A0 = -0.04 + 0.72*0.6 = 0.392
    # row 2: d0 = 2.0 + 0 - 0.5 = 1.5                 A0 = 1.5
    close(adv, [[0.1386752, 0.24816, 0.928, 0.4], [0.392, 0.6, 0, 0], [1.5, 0, 0, 0]])
    # returns = A + V on the mask: row 0 [0.6386752, 0.64816, 1.128, 1.0], row 1 [0.892, 1.0], row 2 [2.0]
    close(ret, [[0.6386752, 0.64816, 1.128, 1.0], [0.892, 1.0, 0, 0], [2.0, 0, 0, 0]])


def test_gae_matches_closed_form_on_random_batch():
    # A_t = sum_{s>=t} (gamma*lam)^(s-t) delta_s, an independent (O(T^2)) formula of the same estimator.
    rng = np.random.default_rng(0)
    b, t, gamma, lam = 5, 9, 0.97, 0.9
    rewards, values = rng.normal(size=(b, t)), rng.normal(size=(b, t))
    mask = (np.arange(t)[None] < rng.integers(1, t + 1, size=b)[:, None]).astype(np.float64)
    adv, ret = pm.gae_advantages(rewards, values, mask, gamma, lam)
    v = values * mask
    next_v = np.concatenate([v[:, 1:], np.zeros((b, 1))], axis=1)
    delta = (rewards + gamma * next_v - v) * mask
    k = np.arange(t)
    discount = np.where(k[None] >= k[:, None], (gamma * lam) ** np.abs(k[None] - k[:, None]), 0.0)
    expected = delta @ discount.T
    close(adv, expected * mask, rtol=1e-10)
    close(ret, (expected + v) * mask, rtol=1e-10)


def test_gae_lambda_one_gamma_one_is_reward_to_go_minus_value():
    rewards = np.array([[1.0, 2.0, 3.0]])
    values = np.array([[0.5, 0.25, 0.125]])
    adv, ret = pm.gae_advantages(rewards, values, np.ones((1, 3)), 1.0, 1.0)
    # reward-to-go = [6, 5, 3]; returns are exactly the Monte-Carlo returns
    close(ret, [[6.0, 5.0, 3.0]])
    close(adv, [[5.5, 4.75, 2.875]])


# ---------------------------------------------------------------------------------------------- policy / value


def test_policy_loss_clipping_on_both_sides():
    eps = 0.2
    ratio = np.array([[1.5, 0.5, 1.1, 1.5, 3.0]])
    adv = np.array([[2.0, -1.0, 1.0, -1.0, 10.0]])
    mask = np.array([[1, 1, 1, 1, 0]])  # last token is padding with extreme values
    old = np.array([[-1.0, -2.0, -0.5, -3.0, -1.0]])
    logp = old + np.log(ratio)
    loss, clipfrac, approx_kl = pm.policy_loss(logp, old, adv, mask, eps)
    # t0: r=1.5 > 1+eps, A=+2: max(-3.0, -2*1.2=-2.4) = -2.4   (clipped)
    # t1: r=0.5 < 1-eps, A=-1: max(0.5, 1*0.8=0.8) = 0.8       (clipped)
    # t2: r=1.1 inside,  A=+1: -1.1                            (not clipped)
    # t3: r=1.5,         A=-1: max(1.5, 1.2) = 1.5             (not clipped: the pessimistic term wins)
    # loss = (-2.4 + 0.8 - 1.1 + 1.5) / 4 = -0.3; clipfrac = 2 / 4
    close(loss, -0.3)
    close(clipfrac, 0.5)
    # approx_kl = mean((r - 1) - ln r) = [0.5 - ln 1.5, -0.5 + ln 2, 0.1 - ln 1.1, 0.5 - ln 1.5] / 4
    expected_kl = (2 * (0.5 - math.log(1.5)) + (-0.5 + math.log(2.0)) + (0.1 - math.log(1.1))) / 4
    close(approx_kl, expected_kl)
    close(expected_kl, 0.09672669616, rtol=1e-9)


def test_policy_loss_on_policy_equals_minus_mean_advantage():
    adv = np.array([[1.0, -3.0, 5.0]])
    logp = np.array([[-1.0, -2.0, -3.0]])
    loss, clipfrac, approx_kl = pm.policy_loss(logp, logp, adv, np.array([[1, 1, 0]]), 0.2)
    close(loss, -(1.0 - 3.0) / 2)
    close(clipfrac, 0.0)
    close(approx_kl, 0.0)


def test_value_loss_clipping_on_both_sides():
    old = np.array([[1.0, 1.0, 1.0, 1.0, 1.0]])
    values = np.array([[1.5, 0.5, 1.1, 1.5, 50.0]])
    returns = np.array([[2.0, 0.0, 1.0, 0.0, -50.0]])
    mask = np.array([[1, 1, 1, 1, 0]])
    loss, clipfrac = pm.value_loss(values, old, returns, mask, cliprange_value=0.2)
    # t0: V moved up past old+0.2: v_clip = 1.2; max((1.5-2)^2 = 0.25, (1.2-2)^2 = 0.64) = 0.64 (clipped)
    # t1: V moved down past old-0.2: v_clip = 0.8; max((0.5-0)^2 = 0.25, 0.8^2 = 0.64) = 0.64 (clipped)
    # t2: inside the range: (1.1-1)^2 = 0.01
    # t3: v_clip = 1.2: max(1.5^2 = 2.25, 1.2^2 = 1.44) = 2.25 (unclipped error is the larger)
    # loss = 0.5 * (0.64 + 0.64 + 0.01 + 2.25) / 4 = 0.4425; clipfrac = 2 / 4
    close(loss, 0.4425)
    close(clipfrac, 0.5)


def test_value_clipfrac_ignores_rounding_inside_the_range():
    # 1.1 + (0.3 - 1.1) = 0.30000000000000004 > 0.3: the "clipped" error is larger by an ulp, but nothing was clipped
    assert 1.1 + (0.3 - 1.1) != 0.3
    loss, clipfrac = pm.value_loss(
        np.array([[0.3]]), np.array([[1.1]]), np.array([[0.0]]), np.array([[1]]), 0.9
    )
    close(clipfrac, 0.0)
    close(loss, 0.5 * 0.09)


def test_explained_variance_hand_values():
    returns = np.array([[1.0, 2.0, 3.0, 99.0]])
    mask = np.array([[1, 1, 1, 0]])
    # residual [0, 0, 1]: population var 2/9; var(R) = 2/3 -> 1 - (2/9) / (2/3) = 2/3
    close(pm.explained_variance(np.array([[1.0, 2.0, 2.0, 0.0]]), returns, mask), 2.0 / 3.0)
    close(pm.explained_variance(returns, returns, mask), 1.0)
    assert math.isnan(pm.explained_variance(returns, np.full((1, 4), 5.0), mask))


# ----------------------------------------------------------------------------------------- logits-based losses


def test_logprobs_entropy_and_temperature_hand_values():
    logits = np.array([[[0.0, math.log(3.0)], [0.0, 0.0]]])  # probs [1/4, 3/4] and [1/2, 1/2]
    labels = np.array([[1, 0]])
    close(pm.logprobs_from_logits(logits, labels), [[math.log(0.75), math.log(0.5)]])
    # temperature 2 halves the logits: p1 = sqrt(3) / (1 + sqrt(3))
    close(pm.logprobs_from_logits(logits, labels, 2.0)[0, 0], math.log(math.sqrt(3) / (1 + math.sqrt(3))))
    # H([1/4, 3/4]) = 0.25 ln 4 + 0.75 ln(4/3); H([1/2, 1/2]) = ln 2
    close(pm.entropy_from_logits(logits), [[0.25 * math.log(4) + 0.75 * math.log(4 / 3), math.log(2)]])
    p = math.sqrt(3) / (1 + math.sqrt(3))
    close(pm.entropy_from_logits(logits, 2.0)[0, 0], -(p * math.log(p) + (1 - p) * math.log(1 - p)))


def test_ptx_loss_is_shifted_masked_nll():
    logits = np.array([[[0.0, math.log(3.0)], [0.0, 0.0], [50.0, -50.0]]])  # last position predicts nothing
    ids = np.array([[0, 1, 0]])
    # ids[1]=1 from logits[0]: -ln(3/4); ids[2]=0 from logits[1]: ln 2
    close(pm.ptx_loss(logits, ids, np.array([[0, 1, 1]])), (-math.log(0.75) + math.log(2.0)) / 2)
    # loss_mask[0] is ignored (nothing predicts the first token)
    close(pm.ptx_loss(logits, ids, np.array([[1, 1, 0]])), -math.log(0.75))


# ------------------------------------------------------------------------------------------ scores, controllers


def test_running_mean_std_matches_numpy_over_batches():
    rng = np.random.default_rng(1)
    batches = [rng.normal(3.0, 2.0, size=n) for n in (1, 7, 4, 16)]
    stats = pm.RunningMeanStd()
    for b in batches:
        stats.update(b)
    allx = np.concatenate(batches)
    close(stats.mean, np.mean(allx), rtol=1e-12)
    close(stats.var, np.var(allx), rtol=1e-12)
    assert stats.count == allx.size


def test_score_normalizer_hand_values_and_clip():
    norm = pm.ScoreNormalizer(normalize=True)
    # batch [1, 2, 3]: mean 2, population var 2/3 -> (s - 2) / sqrt(2/3)
    s = math.sqrt(2.0 / 3.0)
    close(norm(np.array([1.0, 2.0, 3.0])), [-1 / s, 0.0, 1 / s])
    # then [4, 5]: stats over 1..5: mean 3, var 2 -> [1/sqrt2, 2/sqrt2]
    close(norm(np.array([4.0, 5.0])), [1 / math.sqrt(2), 2 / math.sqrt(2)])
    # update=False leaves the statistics alone
    close(norm(np.array([3.0]), update=False), [0.0])
    assert norm.stats.count == 5
    clip_only = pm.ScoreNormalizer(normalize=False, score_clip=1.5)
    close(clip_only(np.array([-4.0, 0.5, 2.0])), [-1.5, 0.5, 1.5])
    clipped = pm.ScoreNormalizer(normalize=True, score_clip=1.0)
    close(clipped(np.array([1.0, 2.0, 3.0])), [-1.0, 0.0, 1.0])  # +-1.2247 clipped to +-1
    # a single first score must not be divided by a zero std
    close(pm.ScoreNormalizer(normalize=True, shift_mean=False)(np.array([2.0])), [2.0])
    with pytest.raises(ValueError):
        pm.ScoreNormalizer(score_clip=0.0)


def test_score_normalizer_state_round_trip_is_exact():
    rng = np.random.default_rng(2)
    batches = [rng.normal(size=8) * 3 + 1 for _ in range(4)]
    a = pm.ScoreNormalizer(normalize=True, score_clip=5.0)
    for b in batches[:2]:
        a(b)
    restored = pm.ScoreNormalizer(normalize=True, score_clip=5.0)
    restored.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for b in batches[2:]:
        out_a, out_r = a(b), restored(b)
        assert np.array_equal(out_a, out_r)  # bit-exact resume
    assert a.state_dict() == restored.state_dict()


def test_adaptive_kl_controller_update_numbers():
    ctl = pm.AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10000)
    # KL 9: error = clip(9/6 - 1 = 0.5) = 0.2; beta = 0.1 * (1 + 0.2 * 256/10000) = 0.1 * 1.00512
    close(ctl.update(9.0, 256), 0.100512)
    # KL 5.7: error = -0.05; beta *= 1 - 0.05 * 0.0256 = 0.99872 -> 0.10038334464
    close(ctl.update(5.7, 256), 0.10038334464)
    # KL 0: error = clip(-1) = -0.2, n_steps = horizon: beta *= 0.8 -> 0.080306675712
    close(ctl.update(0.0, 10000), 0.080306675712)
    close(ctl.value, 0.080306675712)


def test_kl_controller_state_round_trip_and_fixed():
    ctl = pm.make_kl_controller(True, 0.2, 6.0, 10000)
    ctl.update(12.0, 64)
    again = pm.make_kl_controller(True, 0.2, 6.0, 10000)
    again.load_state_dict(json.loads(json.dumps(ctl.state_dict())))
    assert again.value == ctl.value
    assert again.update(3.0, 64) == ctl.update(3.0, 64)
    fixed = pm.make_kl_controller(False, 0.05, 6.0, 10000)
    assert isinstance(fixed, pm.FixedKLController)
    assert fixed.update(100.0, 64) == 0.05
    with pytest.raises(ValueError, match="adaptive"):
        fixed.load_state_dict(ctl.state_dict())
