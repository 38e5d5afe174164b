"""TrainStep against a hand-written numpy reference: loss scaling, global-norm clipping, AdamW, overflow skip;
the lr schedule's hand-computed values; the `runner_wrapper.scale_sense` forms (number, mapping) and their errors."""

import logging

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn, ops

from mindrlhf.configs.loader import ConfigError
from mindrlhf.configs.trainer_base import TrainerConfig
from mindrlhf.trainer.train_step import (
    LossScale,
    TrainStep,
    build_train_step,
    lr_schedule,
    make_optimizer,
    parse_loss_scale,
)

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


def reference(steps, max_norm, scale, lrs=None):
    """numpy: unscale, clip by the global norm, MindSpore AdamWeightDecay (no bias correction; decay on w only)."""
    lrs = [LR] * len(steps) if lrs is None else lrs
    w, b = W0.astype(np.float64), B0.astype(np.float64)
    m = [np.zeros_like(w), np.zeros_like(b)]
    v = [np.zeros_like(w), np.zeros_like(b)]
    norms = []
    for k, lr in zip(steps, lrs):
        gw = 2 * k * (X @ w.T).T @ X
        gb = C.astype(np.float64)
        norm = np.sqrt((gw**2).sum() + (gb**2).sum())
        norms.append(norm)
        f = max_norm / max(norm, max_norm) if max_norm > 0 else 1.0
        out = []
        for i, (p, g, decay) in enumerate(((w, gw * f, WD), (b, gb * f, 0.0))):
            m[i] = BETAS[0] * m[i] + (1 - BETAS[0]) * g
            v[i] = BETAS[1] * v[i] + (1 - BETAS[1]) * g * g
            out.append(p - lr * (m[i] / (np.sqrt(v[i]) + EPS) + decay * p))
        w, b = out
    return w, b, norms


def make_step(max_norm, scale):
    net = Quadratic()
    opt = make_optimizer(net.trainable_params(), np.full(10, LR, np.float32), WD, BETAS, EPS)
    return net, TrainStep(
        net, opt, max_grad_norm=max_norm, loss_scale=scale, scale_factor=2.0, scale_window=2
    )


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


# ------------------------------------------------------------------------------------------------ lr schedule
@pytest.mark.parametrize(
    "decay, expected",
    [  # base 1, 6 steps, 2 warm-up steps, floor 0.1; after warm-up progress p = 0, 1/3, 2/3, 1
        ("cosine", [0.5, 1.0, 1.0, 0.775, 0.325, 0.1]),  # 0.1 + 0.45 (1 + cos(pi p))
        ("linear", [0.5, 1.0, 1.0, 0.7, 0.4, 0.1]),  # 1 - 0.9 p
        ("constant", [0.5, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ],
)
def test_lr_schedule_hand_computed(decay, expected):
    np.testing.assert_allclose(lr_schedule(1.0, 6, 2, decay, 0.1), expected, rtol=1e-6)


def test_lr_schedule_without_warmup_and_single_step():
    np.testing.assert_allclose(lr_schedule(2.0, 3, 0, "linear", 0.5), [2.0, 1.5, 1.0], rtol=1e-6)
    np.testing.assert_allclose(lr_schedule(2.0, 1, 0, "cosine", 0.1), [2.0], rtol=1e-6)
    with pytest.raises(ValueError, match="unknown lr decay"):
        lr_schedule(1.0, 3, 0, "step", 0.1)


def test_steps_past_the_schedule_hold_its_last_learning_rate():
    """A 3-step table and 5 steps (a manual train_step before train() overruns the plan): no Gather error, the
    last two updates use the table's last value, in-graph (checked against numpy AdamW)."""
    table = [0.01, 0.02, 0.005]
    net = Quadratic()
    opt = make_optimizer(net.trainable_params(), np.array(table, np.float32), WD, BETAS, EPS)
    step = TrainStep(net, opt, max_grad_norm=0.0, loss_scale=1.0, lrs=np.array(table, np.float32))
    ks = [1.0, 0.5, 2.0, 1.5, 0.7]
    for k in ks:
        step(Tensor(X), Tensor(k, ms.float32))
    w, b, _ = reference(ks, 0.0, 1.0, lrs=table + [table[-1]] * 2)
    np.testing.assert_allclose(net.w.asnumpy(), w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.b.asnumpy(), b, rtol=1e-5, atol=1e-6)
    assert step.current_lr() == pytest.approx(0.005)


# ------------------------------------------------------------------------------------------------ scale_sense
@pytest.mark.parametrize(
    "scale_sense, expected",
    [
        (None, LossScale(1.0, True, 2.0, 1000)),
        ({}, LossScale(1.0, True, 2.0, 1000)),
        (1.0, LossScale(1.0, False, 1.0, 1)),  # MindFormers' bf16 / LoRA YAMLs
        (1024, LossScale(1024.0, False, 1.0, 1)),
        ({"type": "DynamicLossScaleUpdateCell", "loss_scale_value": 65536, "scale_factor": 2, "scale_window": 1000},
         LossScale(65536.0, True, 2.0, 1000)),
        ({"loss_scale_value": 8.0, "scale_window": 5}, LossScale(8.0, True, 2.0, 5)),
        ({"type": "FixedLossScaleUpdateCell", "loss_scale_value": 128}, LossScale(128.0, False, 1.0, 1)),
    ],
)  # fmt: skip
def test_scale_sense_forms(scale_sense, expected):
    assert parse_loss_scale(scale_sense) == expected


@pytest.mark.parametrize(
    "scale_sense, message",
    [
        (-1.0, "fixed loss scale must be a finite number > 0"),
        (0, "fixed loss scale must be a finite number > 0"),
        ("1.0", "must be a number, got '1.0'"),
        (True, "must be a number"),
        ({"loss_scale_value": 1.0, "scale_windw": 10}, "unknown key.*scale_windw"),
        ({"type": "MyScaler"}, "type must be one of"),
        ({"loss_scale_value": -4}, "loss_scale_value must be a finite number > 0"),
        ({"loss_scale_value": "big"}, "loss_scale_value must be a number"),
        ({"scale_factor": 1.0}, "scale_factor must be a finite number > 1"),
        ({"scale_window": 0}, "scale_window must be >= 1"),
        ({"scale_window": 2.5}, "scale_window must be an integer"),
    ],
)
def test_bad_scale_sense_is_a_config_error_naming_the_field(scale_sense, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_loss_scale(scale_sense)
    assert "runner_wrapper.scale_sense" in str(err.value)


def test_fixed_scale_skips_overflow_and_never_changes(caplog):
    """scale_sense: 8.0 through the one builder: an overflowing step is skipped, the scale stays 8 (a dynamic
    scale would halve), and finite steps never grow it (a dynamic scale with window 2 would double)."""
    net = Quadratic()
    config = TrainerConfig(lr_decay="constant", weight_decay=WD, adam_beta1=BETAS[0], adam_beta2=BETAS[1],
                           adam_eps=EPS, max_grad_norm=None)  # fmt: skip
    with caplog.at_level(logging.INFO, logger="mindrlhf.trainer.train_step"):
        step, optimizer, lrs = build_train_step(net, net.trainable_params(), LR, 10, config, 8.0, "quadratic")
    assert "quadratic: fixed loss scale 8" in caplog.text
    np.testing.assert_allclose(lrs, LR)
    x = X.copy()
    x[0, 0] = np.inf
    w = net.w.asnumpy().copy()
    _, _, overflow, _ = step(Tensor(x), Tensor(1.0, ms.float32))
    assert bool(overflow.asnumpy())
    np.testing.assert_array_equal(net.w.asnumpy(), w)
    assert step.state_dict() == {"loss_scale": 8.0, "good_steps": 0}
    ks = [1.0, 0.5, 2.0]
    for k in ks:
        step(Tensor(X), Tensor(k, ms.float32))
    assert step.state_dict() == {"loss_scale": 8.0, "good_steps": 0}
    ref_w, ref_b, _ = reference(ks, 0.0, 8.0)  # the scale is divided out exactly: plain AdamW
    np.testing.assert_allclose(net.w.asnumpy(), ref_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(net.b.asnumpy(), ref_b, rtol=1e-5, atol=1e-6)


def test_dynamic_scale_from_mapping_is_logged(caplog):
    net = Quadratic()
    with caplog.at_level(logging.INFO, logger="mindrlhf.trainer.train_step"):
        step, _, _ = build_train_step(net, net.trainable_params(), LR, 4, TrainerConfig(),
                                      {"loss_scale_value": 16, "scale_factor": 2, "scale_window": 3})  # fmt: skip
    assert "dynamic loss scale 16 (x2 after 3 finite steps" in caplog.text
    assert step.dynamic_scale and step.scale_window == 3


def test_scale_sense_error_names_the_run_yaml_when_given():
    with pytest.raises(ConfigError, match=r"^run\.yaml: field 'runner_wrapper.scale_sense': .*got 'high'"):
        parse_loss_scale({"loss_scale_value": "high"}, source="run.yaml")
