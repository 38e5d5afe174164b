"""TrainStep against a hand-written numpy reference: loss scaling, global-norm clipping, AdamW, overflow skip."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn, ops

from mindrlhf.trainer.train_step import TrainStep, make_optimizer

X = np.array([[1.0, -2.0, 0.5, 3.0], [0.0, 1.5, -1.0, 2.0]], np.float32)
C = np.array([0.5, -1.0, 2.0], np.float32)
W0 = np.array([[0.1, 0.2, -0.3, 0.4], [-0.5, 0.6, 0.7, -0.8], [0.9, -1.0, 0.2, 0.3]], np.float32)
B0 = np.array([0.3, -0.2, 0.1], np.float32)
# eps of the order of the gradients: Adam is otherwise blind to a constant factor on them (scale, clip).
LR, WD, BETAS, EPS = 0.01, 0.1, (0.9, 0.95), 0.5


class Quadratic(nn.Cell):
    """loss = k * sum((x W^T)^2) + sum(b * c): gradients 2k (x W^T)^T x and c."""

    def __init__(self):
        super().__init__()
        self.w = Parameter(Tensor(W0.copy()), name="w")
        self.b = Parameter(Tensor(B0.copy()), name="b")

    def construct(self, x, k):
        y = ops.matmul(x, self.w.T)
        loss = k * (y * y).sum() + (self.b * Tensor(C)).sum()
        return loss, ops.stack([loss, loss])


def reference(steps, max_norm, scale):
    """numpy: unscale, clip by the global norm, MindSpore AdamWeightDecay (no bias correction; decay on w only)."""
    w, b = W0.astype(np.float64), B0.astype(np.float64)
    m = [np.zeros_like(w), np.zeros_like(b)]
    v = [np.zeros_like(w), np.zeros_like(b)]
    norms = []
    for k in steps:
        gw = 2 * k * (X @ w.T).T @ X
        gb = C.astype(np.float64)
        norm = np.sqrt((gw**2).sum() + (gb**2).sum())
        norms.append(norm)
        f = max_norm / max(norm, max_norm) if max_norm > 0 else 1.0
        out = []
        for i, (p, g, decay) in enumerate(((w, gw * f, WD), (b, gb * f, 0.0))):
            m[i] = BETAS[0] * m[i] + (1 - BETAS[0]) * g
            v[i] = BETAS[1] * v[i] + (1 - BETAS[1]) * g * g
            out.append(p - LR * (m[i] / (np.sqrt(v[i]) + EPS) + decay * p))
        w, b = out
    return w, b, norms


def make_step(max_norm, scale):
    net = Quadratic()
    opt = make_optimizer(net.trainable_params(), np.full(10, LR, np.float32), WD, BETAS, EPS)
    return net, TrainStep(net, opt, max_grad_norm=max_norm, loss_scale=scale, scale_factor=2.0, scale_window=2)


@pytest.mark.parametrize("max_norm", [0.0, 1.0, 1000.0])
def test_matches_numpy_adamw_with_scaling_and_clipping(max_norm):
    scale, steps = 8.0, [1.0, 0.5, 2.0]
    net, step = make_step(max_norm, scale)
    norms = []
    for k in steps:
        loss, metrics, overflow, norm = step(Tensor(X), Tensor(k, ms.float32))
        assert not bool(overflow.asnumpy())
        norms.append(float(norm.asnumpy()))
    w, b, ref_norms = reference(steps, max_norm, scale)
    assert ref_norms[0] > 1.0  # clipping at 1.0 is active, at 1000 it is not
    np.testing.assert_allclose(norms, ref_norms, rtol=1e-5)  # the unscaled norm, before clipping
    np.testing.assert_allclose(net.w.asnumpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.b.asnumpy(), b, rtol=1e-5, atol=1e-6)
    # scale_window=2: after 3 finite steps the scale grew once (8 -> 16) and one good step is counted.
    assert step.state_dict() == {"loss_scale": 16.0, "good_steps": 1}


def test_non_finite_gradient_skips_update_and_lowers_the_scale():
    net, step = make_step(1.0, 8.0)
    step(Tensor(X), Tensor(1.0, ms.float32))
    w, b = net.w.asnumpy().copy(), net.b.asnumpy().copy()
    moments = [p.asnumpy().copy() for p in step.optimizer.moments1]
    for bad in (np.inf, np.nan):
        x = X.copy()
        x[0, 0] = bad
        _, _, overflow, norm = step(Tensor(x), Tensor(1.0, ms.float32))
        assert bool(overflow.asnumpy()) and not np.isfinite(norm.asnumpy())
    np.testing.assert_array_equal(net.w.asnumpy(), w)
    np.testing.assert_array_equal(net.b.asnumpy(), b)
    for before, p in zip(moments, step.optimizer.moments1):
        np.testing.assert_array_equal(p.asnumpy(), before)
    assert step.state_dict() == {"loss_scale": 2.0, "good_steps": 0}  # 8 -> 4 -> 2
    # A finite step afterwards updates again.
    _, _, overflow, _ = step(Tensor(X), Tensor(1.0, ms.float32))
    assert not bool(overflow.asnumpy()) and not np.array_equal(net.w.asnumpy(), w)
