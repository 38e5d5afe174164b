"""MindSpore critic-free policy losses and DPO (mindrlhf.trainer.policy_losses) equal the numpy reference
(mindrlhf.algorithms) under ms.jit and in GRAPH mode, and their gradients equal finite differences of it."""

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import Tensor  # noqa: E402

from mindrlhf.algorithms import aggregate_loss, dpo_loss, kl_in_loss, policy_loss  # noqa: E402
from mindrlhf.trainer import losses, policy_losses  # noqa: E402

B, T = 4, 6
CLIP = 0.2
# float32 on CPU against float64 numpy: MindSpore's exp is accurate to ~4e-6 relative
RTOL, ATOL = 1e-5, 1e-6


def close(actual, expected, rtol=RTOL, atol=ATOL):
    actual = actual.asnumpy() if hasattr(actual, "asnumpy") else actual
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol, atol=atol)


def away_from(x, edges, gap=2e-3):
    """Move entries within `gap` of an edge to edge + 2*gap, so float32 and float64 agree on the side."""
    x = x.copy()
    for e in edges:
        near = np.abs(x - e) < gap
        x[near] = e + 2 * gap
    return x


def make_batch(seed, ratio_level="token", clip_high=CLIP, junk=np.nan):
    """Random float32 batch: a full row, an early EOS, a one-token response, and junk under the mask."""
    rng = np.random.default_rng(seed)
    mask = (np.arange(T)[None] < np.array([T, 3, 1, 5])[:, None]).astype(np.float32)
    old = rng.normal(-2.0, 0.5, size=(B, T))
    # row 0 mostly above the upper edge with A > 0, row 1 mostly below the lower edge with A < 0: both clip
    # sides are exercised for token and sequence ratios; rows 2 and 3 are random
    log_ratio = rng.uniform(-0.5, 0.5, size=(B, T)) + np.array([0.35, -0.4, 0.0, 0.0])[:, None]
    sign = np.array([1.0, -1.0, 0.0, 0.0])[:, None]
    advantages = np.where(sign == 0, rng.normal(size=(B, T)), sign * rng.uniform(0.5, 1.5, size=(B, T)))
    edges = [np.log(1 - CLIP), np.log(1 + clip_high)]
    if ratio_level == "sequence":  # keep each row's mean log-ratio off the clip edges
        n = mask.sum(1)
        seq = (log_ratio * mask).sum(1) / n
        log_ratio += (away_from(seq, edges) - seq)[:, None]
    else:
        log_ratio = away_from(log_ratio, edges)
    logprobs = np.where(mask > 0, old + log_ratio, junk)
    advantages = np.where(mask > 0, advantages, -junk)
    f32 = lambda x: np.asarray(x, dtype=np.float32)  # noqa: E731
    # the reference sees exactly the float32 values MindSpore sees
    return f32(logprobs), f32(old), f32(advantages), mask


CONFIGS = [
    # (loss_agg, ratio_level, clip_high, max_len, advantages per row)
    ("token_mean", "token", None, None, False),
    ("token_mean", "token", 0.28, None, True),
    ("seq_mean_token_mean", "token", None, None, True),
    ("seq_mean_token_sum_norm", "token", 0.28, None, True),
    ("seq_mean_token_sum_norm", "token", None, 16, False),
    ("seq_mean_token_mean", "sequence", None, None, True),
    ("token_mean", "sequence", 0.28, None, False),
]
IDS = [f"{a}-{r}-hi{h}-len{m}-{'row' if p else 'tok'}" for a, r, h, m, p in CONFIGS]


def cell_and_jitted(loss_agg, ratio_level, clip_high, max_len):
    cell = policy_losses.PolicyLoss(CLIP, clip_high, loss_agg, ratio_level, max_len)

    @ms.jit
    def forward(logprobs, old_logprobs, advantages, mask):
        return cell(logprobs, old_logprobs, advantages, mask)

    def loss_only(logprobs, old_logprobs, advantages, mask):
        return cell(logprobs, old_logprobs, advantages, mask)[0]

    @ms.jit
    def grad(logprobs, old_logprobs, advantages, mask):
        return ms.grad(loss_only)(logprobs, old_logprobs, advantages, mask)

    return cell, forward, grad


def numpy_inputs(logprobs, old, advantages, mask, per_row):
    return logprobs, old, (advantages[:, 0] if per_row else advantages), mask


@pytest.mark.parametrize("loss_agg, ratio_level, clip_high, max_len, per_row", CONFIGS, ids=IDS)
def test_policy_loss_matches_numpy_under_jit(loss_agg, ratio_level, clip_high, max_len, per_row):
    hi = CLIP if clip_high is None else clip_high
    args = numpy_inputs(*make_batch(0, ratio_level, hi), per_row)
    cell, forward, _ = cell_and_jitted(loss_agg, ratio_level, clip_high, max_len)
    ref = policy_loss(*args, CLIP, clip_high, loss_agg, ratio_level, max_len)
    assert 0 < ref.clipfrac_low and 0 < ref.clipfrac_high  # both clip edges exercised
    out = forward(*map(Tensor, args))
    assert len(out) == 1 + len(policy_losses.POLICY_LOSS_METRICS)
    close(out[0], ref.loss)
    for name, value in zip(policy_losses.POLICY_LOSS_METRICS, out[1:]):
        close(value, getattr(ref, name), atol=1e-6)
    eager = cell(*map(Tensor, args))  # PyNative gives the same numbers
    close(eager[0], ref.loss)


def numeric_grad(args, kwargs, h=1e-6):
    """Central differences of the float64 numpy loss w.r.t. logprobs (real tokens only)."""
    logprobs, old, advantages, mask = (np.asarray(a, dtype=np.float64) for a in args)
    grad = np.zeros_like(logprobs)
    for i, j in zip(*np.nonzero(mask)):
        up, down = logprobs.copy(), logprobs.copy()
        up[i, j] += h
        down[i, j] -= h
        grad[i, j] = (
            policy_loss(up, old, advantages, mask, **kwargs).loss
            - policy_loss(down, old, advantages, mask, **kwargs).loss
        ) / (2 * h)
    return grad


@pytest.mark.parametrize("loss_agg, ratio_level, clip_high, max_len, per_row", CONFIGS, ids=IDS)
def test_policy_gradient_matches_finite_differences(loss_agg, ratio_level, clip_high, max_len, per_row):
    hi = CLIP if clip_high is None else clip_high
    args = numpy_inputs(*make_batch(1, ratio_level, hi), per_row)
    _, _, grad = cell_and_jitted(loss_agg, ratio_level, clip_high, max_len)
    kwargs = dict(
        clip_low=CLIP, clip_high=clip_high, loss_agg=loss_agg, ratio_level=ratio_level, max_len=max_len
    )
    expected = numeric_grad(args, kwargs)
    assert np.count_nonzero(expected) >= 3
    got = grad(*map(Tensor, args)).asnumpy()
    assert np.all(np.isfinite(got)) and np.all(got[args[3] == 0] == 0)  # junk under the mask gets no gradient
    close(got, expected, rtol=1e-4, atol=1e-6)


def test_defaults_equal_the_ppo_loss():
    logprobs, old, advantages, mask = make_batch(2, junk=0.0)
    args = list(map(Tensor, (logprobs, old, advantages, mask)))
    ours = policy_losses.PolicyLoss()(*args)
    theirs = losses.policy_loss(*args, CLIP)
    close(ours[0], theirs[0].asnumpy(), rtol=1e-6, atol=0)
    close(ours[1], theirs[1].asnumpy(), rtol=0, atol=0)
    close(ours[4], theirs[2].asnumpy(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_kl_in_loss_and_aggregation_match_numpy(loss_agg):
    rng = np.random.default_rng(4)
    logprobs = rng.normal(-2, 0.5, size=(B, T)).astype(np.float32)
    ref = (logprobs + rng.normal(0, 0.3, size=(B, T))).astype(np.float32)
    mask = make_batch(0)[3]
    k3_ref = kl_in_loss(logprobs, ref)
    k3_ref[mask == 0] = np.inf  # junk the aggregation must ignore
    agg = policy_losses.LossAggregation(loss_agg)

    @ms.jit
    def forward(logprobs, ref, mask):
        k3 = policy_losses.kl_in_loss(logprobs, ref)
        return k3, agg(mint_where_inf(k3, mask), mask)

    k3, total = forward(Tensor(logprobs), Tensor(ref), Tensor(mask))
    close(k3.asnumpy()[mask > 0], k3_ref[mask > 0])
    close(total, aggregate_loss(k3_ref, mask, loss_agg))


def mint_where_inf(x, mask):
    return ms.mint.where(mask > 0, x, ms.ops.ones_like(x) * float("inf"))


def test_bad_options_raise_at_construction():
    with pytest.raises(ValueError, match="unknown loss_agg"):
        policy_losses.PolicyLoss(loss_agg="sum")
    with pytest.raises(ValueError, match="unknown ratio_level"):
        policy_losses.PolicyLoss(ratio_level="seq")
    with pytest.raises(ValueError, match="max_len"):
        policy_losses.LossAggregation("seq_mean_token_sum_norm", max_len=0)
    with pytest.raises(ValueError, match="unknown DPO loss_type"):
        policy_losses.DPOLoss(0.1, "kto")


# ---------------------------------------------------------------------------------------------------------- DPO


@pytest.mark.parametrize(
    "loss_type, label_smoothing, beta",
    [("sigmoid", 0.0, 0.1), ("sigmoid", 0.1, 0.5), ("ipo", 0.0, 0.1), ("hinge", 0.0, 0.5)],
)
def test_dpo_loss_matches_numpy_under_jit(loss_type, label_smoothing, beta):
    rng = np.random.default_rng(5)
    logps = [rng.normal(-20, 4, size=8).astype(np.float32) for _ in range(4)]
    logps.append(np.array([1e3, -1e3, 0, 0, 0, 0, 0, 0], np.float32) + logps[0])  # large margins stay finite
    cell = policy_losses.DPOLoss(beta, loss_type, label_smoothing)

    @ms.jit
    def forward(pc, pr, rc, rr):
        return cell(pc, pr, rc, rr)

    def mean_loss(pc, pr, rc, rr):
        return cell(pc, pr, rc, rr)[0].mean()

    for pc in (logps[0], logps[4]):
        args = (pc, logps[1], logps[2], logps[3])
        out = forward(*map(Tensor, args))
        ref = dpo_loss(*args, beta=beta, loss_type=loss_type, label_smoothing=label_smoothing)
        assert len(out) == len(policy_losses.DPO_OUTPUTS)
        for got, want in zip(out, ref):
            close(got, want, rtol=1e-5, atol=1e-5)
    # gradient w.r.t. the chosen log-probs equals the numpy finite difference (rewards carry none)
    args = [logps[0], logps[1], logps[2], logps[3]]
    grad = ms.jit(ms.grad(mean_loss))(*map(Tensor, args)).asnumpy()
    h, expected = 1e-4, np.zeros(8)
    for i in range(8):
        up, down = [a.astype(np.float64) for a in args], [a.astype(np.float64) for a in args]
        up[0][i] += h
        down[0][i] -= h
        kw = dict(beta=beta, loss_type=loss_type, label_smoothing=label_smoothing)
        expected[i] = (dpo_loss(*up, **kw)[0].mean() - dpo_loss(*down, **kw)[0].mean()) / (2 * h)
    close(grad, expected, rtol=1e-4, atol=1e-6)


def test_dpo_rewards_carry_no_gradient():
    cell = policy_losses.DPOLoss(0.1)

    def rewards_only(pc, pr, rc, rr):
        out = cell(pc, pr, rc, rr)
        return out[1].sum() + out[2].sum()

    args = [Tensor(np.full(3, v, np.float32)) for v in (-1.0, -2.0, -1.5, -1.5)]
    np.testing.assert_array_equal(ms.grad(rewards_only)(*args).asnumpy(), 0.0)
