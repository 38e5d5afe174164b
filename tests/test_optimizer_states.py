"""AdamW moments in float32 for 16-bit weights (issue 18): `make_optimizer` keeps `nn.AdamWeightDecay` for
all-float32 weights and builds `FP32StateAdamWeightDecay` otherwise; its steps against a hand-written numpy
float32 AdamW, the small-gradient case fp16 moments get wrong, resume of its state, and the memory plan's bytes."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

from mindrlhf.models.llama.config import LlamaConfig
from mindrlhf.trainer.optim import FP32StateAdamWeightDecay
from mindrlhf.trainer.train_step import TrainStep, make_optimizer
from mindrlhf.utils.checkpoint import read_checkpoint
from mindrlhf.utils.resume import resume_problems
from mindrlhf.utils.run_state import load_optimizer_state, load_run_state, optimizer_state, save_run_state

W0 = np.array([[0.1, 0.2, -0.3, 0.4], [-0.5, 0.6, 0.7, -0.8], [0.9, -1.0, 0.2, 0.3]], np.float32)
B0 = np.array([0.3, -0.2, 0.1], np.float32)
LRS = np.array([0.01, 0.02, 0.005], np.float32)
WD, BETAS, EPS = 0.1, (0.9, 0.95), 1e-8


def _weights(dtype=np.float16):
    return [Parameter(Tensor(W0.astype(dtype)), name="w"), Parameter(Tensor(B0.astype(dtype)), name="b")]


def _grads(step):
    """Gradients of step `step` as fp16 arrays: w [3, 4] and b [3], mixed magnitudes down to 1e-4."""
    rng = np.random.default_rng(step)
    gw = rng.normal(0.0, 1.0, (3, 4)) * 10.0 ** rng.integers(-4, 1, (3, 4))
    return [gw.astype(np.float16), rng.normal(0.0, 0.1, 3).astype(np.float16)]


def reference_adamw(weights, grads_per_step, lrs, decays):
    """numpy float32 AdamW as MindSpore's AdamWeightDecay (no bias correction, decoupled decay), with each
    weight cast up to float32 before its step and rounded back to its own dtype after it -> (weights, m, v)."""
    m = [np.zeros(w.shape, np.float32) for w in weights]
    v = [np.zeros(w.shape, np.float32) for w in weights]
    b1, b2, eps = np.float32(BETAS[0]), np.float32(BETAS[1]), np.float32(EPS)
    weights = list(weights)
    for grads, lr in zip(grads_per_step, lrs):
        for i, (w, g, wd) in enumerate(zip(weights, grads, decays)):
            w32, g32 = w.astype(np.float32), g.astype(np.float32)
            m[i] = b1 * m[i] + (np.float32(1) - b1) * g32
            v[i] = b2 * v[i] + (np.float32(1) - b2) * g32 * g32
            update = m[i] / (eps + np.sqrt(v[i])) + np.float32(wd) * w32
            weights[i] = (w32 - np.float32(lr) * update).astype(w.dtype)
    return weights, m, v


def assert_within_fp16_rounding(actual, expected):
    """Every element within one fp16 step of `expected` (the float32 math of two kernels may differ in its last
    bit, which can move the rounded fp16 weight by one step); dtypes equal."""
    assert actual.dtype == expected.dtype
    gap = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    assert (gap <= np.spacing(np.abs(expected))).all(), f"max gap {gap.max()} vs {expected}"


def test_fp16_weights_get_float32_moments_under_the_usual_names():
    fp16 = make_optimizer(_weights(), LRS, WD, BETAS, EPS)
    fp32 = make_optimizer(_weights(np.float32), LRS, WD, BETAS, EPS)
    assert type(fp16) is FP32StateAdamWeightDecay
    for ours, mindspores in ((fp16.moments1, fp32.moments1), (fp16.moments2, fp32.moments2)):
        assert [p.name for p in ours] == [p.name for p in mindspores]
        assert [p.shape for p in ours] == [p.shape for p in mindspores] == [(3, 4), (3,)]
        assert all(p.dtype == ms.float32 for p in ours)
    assert [p.name for p in fp16.moments1 + fp16.moments2] == ["adam_m.w", "adam_m.b", "adam_v.w", "adam_v.b"]
    assert all(p.dtype == ms.float16 for p in fp16.parameters)  # the weights keep their dtype
    # Every slot a checkpoint holds: the same names as MindSpore's optimizer, so resume/checkpoint code sees no change.
    assert set(optimizer_state(fp16)) == set(optimizer_state(fp32))


@pytest.mark.parametrize("steps", [1, 3])
def test_fp16_steps_match_numpy_float32_adamw(steps):
    weights = _weights()
    opt = make_optimizer(weights, LRS, WD, BETAS, EPS)
    grads = [_grads(s) for s in range(steps)]
    for g in grads:
        opt(tuple(Tensor(x) for x in g))
    expected, m, v = reference_adamw([W0.astype(np.float16), B0.astype(np.float16)], grads, LRS, (WD, 0.0))
    for param, want in zip(weights, expected):
        assert param.dtype == ms.float16
        assert_within_fp16_rounding(param.asnumpy(), want)
    for ours, want in zip(list(opt.moments1) + list(opt.moments2), m + v):
        np.testing.assert_allclose(ours.asnumpy(), want, rtol=1e-6, atol=0)
    assert int(opt.global_step.asnumpy()[0]) == steps
    # The weights moved: the test is not passing on an optimizer that does nothing.
    assert not np.array_equal(weights[0].asnumpy(), W0.astype(np.float16))


def test_a_small_fp16_gradient_gives_a_finite_correctly_sized_update():
    """g = 1e-4 (fp16: 1.0001659e-4): v = (1 - b2) g^2 = 5.0e-10 is below fp16's smallest subnormal (6e-8).

    With MindSpore's own AdamWeightDecay on fp16 weights (moments cloned as fp16) the same step on this CPU gives
    v = 0.0 and the weight 0.5 -> -inf after one step (nan after two): measured with nn.AdamWeightDecay,
    lr 1e-2, betas (0.9, 0.95), eps 1e-8. With float32 moments the first step is lr * m / (sqrt(v) + eps) =
    lr * 1e-5 / 2.236e-5 ~= 0.447 lr, as in float32 arithmetic."""
    w = Parameter(Tensor(np.full((2, 2), 0.5, np.float16)), name="w")
    opt = make_optimizer([w], np.full(3, 1e-2, np.float32), 0.0, BETAS, EPS)
    g = np.full((2, 2), 1e-4, np.float16)
    opt((Tensor(g),))
    v = opt.moments2[0].asnumpy()
    np.testing.assert_allclose(v, 0.05 * np.float32(g) ** 2, rtol=1e-6)
    assert (v > 0).all() and np.float16(v[0, 0]) == 0  # representable only in float32
    step = 0.5 - w.asnumpy().astype(np.float64)
    expected = 1e-2 * 0.1 / (np.sqrt(0.05) + EPS / float(g[0, 0]))  # lr * m / (sqrt(v) + eps), g factored out
    assert np.isfinite(step).all()
    np.testing.assert_allclose(
        step, expected, rtol=0, atol=np.spacing(np.float16(0.5))
    )  # within fp16 rounding
    for _ in range(2):
        opt((Tensor(g),))
    expected_w, _, _ = reference_adamw([np.full((2, 2), 0.5, np.float16)], [[g]] * 3, [1e-2] * 3, (0.0,))
    assert_within_fp16_rounding(w.asnumpy(), expected_w[0])


def test_float32_weights_keep_mindspores_fused_adamweightdecay():
    opt = make_optimizer(_weights(np.float32), LRS, WD, BETAS, EPS)
    assert type(opt) is nn.AdamWeightDecay
    assert all(p.dtype == ms.float32 for p in opt.moments1 + opt.moments2)
    # One 16-bit weight among float32 ones is enough to take the float32-state path (for all of them).
    mixed = [Parameter(Tensor(W0), name="w"), Parameter(Tensor(B0.astype(np.float16)), name="b")]
    assert type(make_optimizer(mixed, LRS, WD, BETAS, EPS)) is FP32StateAdamWeightDecay
    # bf16 bookkeeping only (bf16 does not run on CPU): moments are still float32.
    bf16 = Parameter(Tensor(W0, ms.bfloat16), name="w")
    opt = make_optimizer([bf16], LRS, WD, BETAS, EPS)
    assert [(p.name, p.dtype) for p in opt.moments2] == [("adam_v.w", ms.float32)]


class _Linear(nn.Cell):
    """loss = sum(x W^T) + sum(b) computed in float32: dL/dW = sum over rows of x (per output), dL/db = 1."""

    def __init__(self):
        super().__init__()
        self.w, self.b = _weights()

    def construct(self, x):
        y = ms.ops.matmul(x, self.w.astype(ms.float32).T) + self.b.astype(ms.float32)
        loss = y.sum()
        return loss, ms.ops.stack([loss])


def test_train_step_with_fp16_weights_and_resume_of_its_state(tmp_path):
    """TrainStep (one jit graph with the optimizer) on fp16 weights equals the numpy reference; a run saved after
    two steps passes `resume_problems` (utils/resume.py), loads into a fresh model and optimizer, and continues
    bit-identically; a state saved with fp16 moments (before issue 18) loads as float32."""
    x = np.array([[1.0, -2.0, 0.5, 3.0], [0.0, 1.5, -1.0, 2.0]], np.float32)

    def build():
        net = _Linear()
        return net, TrainStep(net, make_optimizer(net.trainable_params(), LRS, WD, BETAS, EPS), 0.0, lrs=LRS)

    net, step = build()
    for _ in range(2):
        _, _, overflow, _ = step(Tensor(x))
        assert not bool(overflow.asnumpy())
    grad = [np.tile(x.sum(0), (3, 1)).astype(np.float16), np.ones(3, np.float16)]
    expected, _, _ = reference_adamw(
        [W0.astype(np.float16), B0.astype(np.float16)], [grad] * 2, LRS, (WD, 0.0)
    )
    assert_within_fp16_rounding(net.w.asnumpy(), expected[0])
    assert_within_fp16_rounding(net.b.asnumpy(), expected[1])

    save_run_state(str(tmp_path), 2, {"model": net}, {"model": step.optimizer}, {"note": 1})
    saved = read_checkpoint(str(tmp_path / "checkpoints" / "step_000002" / "model_optimizer.ckpt"))
    assert saved["adam_v.w"].dtype == saved["adam_m.b"].dtype == ms.float32  # on disk too
    assert {"adam_m.w", "adam_m.b", "adam_v.w", "adam_v.b", "global_step"} <= set(saved)
    problems, state = resume_problems(str(tmp_path), {"model": {"w": (3, 4), "b": (3,)}}, ["model"], ["note"])
    assert problems == [] and state["step"] == 2
    fresh_net, fresh = build()
    load_run_state(str(tmp_path), {"model": fresh_net}, {"model": fresh.optimizer})
    step(Tensor(x))
    fresh(Tensor(x))
    ours = net.trainable_params() + list(step.optimizer.moments1) + list(step.optimizer.moments2)
    theirs = fresh_net.trainable_params() + list(fresh.optimizer.moments1) + list(fresh.optimizer.moments2)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())
    assert int(fresh.optimizer.global_step.asnumpy()[0]) == 3

    old = {
        k: Tensor(v.asnumpy().astype(np.float16)) if k.startswith("adam_") else v for k, v in saved.items()
    }
    load_optimizer_state(fresh.optimizer, old, "old.ckpt")
    assert fresh.optimizer.moments1[0].dtype == ms.float32
    np.testing.assert_array_equal(
        fresh.optimizer.moments1[0].asnumpy(), saved["adam_m.w"].asnumpy().astype(np.float16)
    )


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_memory_plan_counts_the_moments_the_optimizer_holds(dtype):
    from mindrlhf.configs.ppo_config import PPOConfig
    from mindrlhf.models.llama.model import LlamaForCausalLM
    from mindrlhf.tools.plan_memory import plan_memory

    tiny = dict(hidden_size=4, num_layers=1, num_heads=2, n_kv_heads=1, intermediate_size=6, vocab_size=10,
                seq_length=8, param_init_type=dtype, compute_dtype=dtype)  # fmt: skip
    model = LlamaConfig(**tiny)
    ppo = PPOConfig(rollout_batch_size=2, mini_batch_size=2, max_prompt_length=3, max_new_tokens=2,
                    seq_length=5, warmup_steps=0, num_iterations=1)  # fmt: skip
    actor = {r.name: r for r in plan_memory(model, ppo).roles}["actor"]
    params = LlamaForCausalLM(model).trainable_params()
    opt = make_optimizer(params, LRS, WD, BETAS, EPS)
    held = sum(p.asnumpy().nbytes for p in list(opt.moments1) + list(opt.moments2))
    assert actor.params == sum(int(np.prod(p.shape)) for p in params) == 212
    assert held == 212 * 8  # m and v in float32 whatever the weight dtype
    # No fp32 master copy of 16-bit weights on either side (the update is computed in float32 and rounded back to
    # the weight dtype, as MindFormers' FP32StateAdamWeightDecay does): the plan is what the optimizer holds.
    assert actor.optimizer == held
