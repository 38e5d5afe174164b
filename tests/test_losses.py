"""MindSpore PPO losses equal the numpy reference (PyNative and ms.jit), and their gradients go where they should."""

import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import Tensor  # noqa: E402

from mindrlhf.algorithms import ppo_math as pm  # noqa: E402
from mindrlhf.trainer import losses  # noqa: E402

B, T, V = 3, 7, 11
CLIP, CLIP_V, TEMP = 0.2, 0.3, 0.7
# float32 on CPU: MindSpore's exp is accurate to ~4e-6 relative, so compare at 1e-5 / 1e-6 against float64 numpy
RTOL, ATOL = 1e-5, 1e-6


def close(actual, expected, rtol=RTOL, atol=ATOL):
    actual = actual.asnumpy() if hasattr(actual, "asnumpy") else actual
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol, atol=atol)


def away_from(x, edges, gap=1e-3):
    """Move entries within `gap` of any edge to edge + 2*gap, so float32 and float64 agree on which side they are."""
    x = x.copy()
    for e in edges:
        near = np.abs(x - e) < gap
        x[near] = e + 2 * gap
    return x


@pytest.fixture()
def batch():
    rng = np.random.default_rng(1234)
    lengths = np.array([T, 3, 1])  # a full response, an early EOS, a one-token response
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.float32)
    old = rng.normal(-2.0, 0.5, size=(B, T))
    ratio = away_from(np.exp(rng.uniform(-0.5, 0.5, size=(B, T))), [1 - CLIP, 1 + CLIP])
    old_values = rng.normal(size=(B, T))
    delta_v = away_from(rng.uniform(-0.6, 0.6, size=(B, T)), [-CLIP_V, CLIP_V])
    data = {
        "logits": rng.normal(0, 2, size=(B, T, V)),
        "labels": rng.integers(0, V, size=(B, T)).astype(np.int32),
        "old_logprobs": old,
        "logprobs": old + np.log(ratio),
        "advantages": rng.normal(size=(B, T)),
        "values": old_values + delta_v,
        "old_values": old_values,
        "returns": rng.normal(size=(B, T)),
        "response_mask": mask,
    }
    # the reference sees exactly the float32 values MindSpore sees
    return {k: v if v.dtype == np.int32 else v.astype(np.float32) for k, v in data.items()}


def t(x):
    return Tensor(x)


# ---------------------------------------------------------------- functions compiled by ms.jit (must live in a file)


@ms.jit
def policy_loss_jit(logprobs, old_logprobs, advantages, mask):
    return losses.policy_loss(logprobs, old_logprobs, advantages, mask, CLIP)


@ms.jit
def value_loss_jit(values, old_values, returns, mask):
    return losses.value_loss(values, old_values, returns, mask, CLIP_V)


@ms.jit
def gather_logprobs_jit(logits, labels):
    return losses.gather_logprobs(logits, labels, TEMP)


@ms.jit
def entropy_jit(logits):
    return losses.entropy_from_logits(logits, TEMP)


@ms.jit
def ptx_loss_jit(logits, input_ids, loss_mask):
    return losses.ptx_loss(logits, input_ids, loss_mask)


@ms.jit
def masked_mean_jit(x, mask):
    return losses.masked_mean(x, mask), losses.masked_mean(x, mask, axis=1)


def _policy_loss_only(logprobs, old_logprobs, advantages, mask):
    return losses.policy_loss(logprobs, old_logprobs, advantages, mask, CLIP)[0]


def _value_loss_only(values, old_values, returns, mask):
    return losses.value_loss(values, old_values, returns, mask, CLIP_V)[0]


def _ptx_loss_of_logits(logits, input_ids, loss_mask):
    return losses.ptx_loss(logits, input_ids, loss_mask)


@ms.jit
def policy_grad_jit(logprobs, old_logprobs, advantages, mask):
    return ms.grad(_policy_loss_only)(logprobs, old_logprobs, advantages, mask)


@ms.jit
def value_grad_jit(values, old_values, returns, mask):
    return ms.grad(_value_loss_only)(values, old_values, returns, mask)


@ms.jit
def ptx_grad_jit(logits, input_ids, loss_mask):
    return ms.grad(_ptx_loss_of_logits)(logits, input_ids, loss_mask)


# ------------------------------------------------------------------------------------------------- forward parity


@pytest.mark.parametrize("jit", [False, True], ids=["pynative", "jit"])
def test_policy_loss_matches_numpy(batch, jit):
    fn = policy_loss_jit if jit else (lambda *a: losses.policy_loss(*a, CLIP))
    args = [batch[k] for k in ("logprobs", "old_logprobs", "advantages", "response_mask")]
    loss, clipfrac, approx_kl = fn(*map(t, args))
    ref_loss, ref_clipfrac, ref_kl = pm.policy_loss(*args, CLIP)
    assert 0.0 < ref_clipfrac < 1.0  # both branches are exercised
    close(loss, ref_loss)
    close(clipfrac, ref_clipfrac, rtol=0, atol=1e-7)
    close(approx_kl, ref_kl)


@pytest.mark.parametrize("jit", [False, True], ids=["pynative", "jit"])
def test_value_loss_matches_numpy(batch, jit):
    fn = value_loss_jit if jit else (lambda *a: losses.value_loss(*a, CLIP_V))
    args = [batch[k] for k in ("values", "old_values", "returns", "response_mask")]
    loss, clipfrac = fn(*map(t, args))
    ref_loss, ref_clipfrac = pm.value_loss(*args, CLIP_V)
    assert 0.0 < ref_clipfrac < 1.0
    close(loss, ref_loss)
    close(clipfrac, ref_clipfrac, rtol=0, atol=1e-7)


@pytest.mark.parametrize("jit", [False, True], ids=["pynative", "jit"])
def test_logprobs_entropy_ptx_match_numpy(batch, jit):
    logits, labels, mask = batch["logits"], batch["labels"], batch["response_mask"]
    gather = gather_logprobs_jit if jit else (lambda lg, lb: losses.gather_logprobs(lg, lb, TEMP))
    entropy = entropy_jit if jit else (lambda lg: losses.entropy_from_logits(lg, TEMP))
    ptx = ptx_loss_jit if jit else losses.ptx_loss
    logprobs = gather(t(logits), t(labels))
    assert logprobs.dtype == ms.float32 and logprobs.shape == (B, T)
    close(logprobs, pm.logprobs_from_logits(logits, labels, TEMP))
    close(entropy(t(logits)), pm.entropy_from_logits(logits, TEMP))
    close(ptx(t(logits), t(labels), t(mask)), pm.ptx_loss(logits, labels, mask))


def test_gather_logprobs_float16_logits_and_default_temperature(batch):
    logits16 = batch["logits"].astype(np.float16)
    out = losses.gather_logprobs(t(logits16), t(batch["labels"]))
    assert out.dtype == ms.float32
    close(out, pm.logprobs_from_logits(logits16.astype(np.float64), batch["labels"]))


@pytest.mark.parametrize("jit", [False, True], ids=["pynative", "jit"])
def test_masked_mean_matches_numpy_and_empty_mask(batch, jit):
    fn = (
        masked_mean_jit
        if jit
        else (lambda x, m: (losses.masked_mean(x, m), losses.masked_mean(x, m, axis=1)))
    )
    x, mask = batch["advantages"], batch["response_mask"]
    total, per_row = fn(t(x), t(mask))
    close(total, pm.masked_mean(x, mask))
    close(per_row, pm.masked_mean(x, mask, axis=1))
    empty_total, _ = fn(t(x), t(np.zeros_like(mask)))
    close(empty_total, 0.0, atol=0)


# ------------------------------------------------------------------------------------------------------ gradients


def policy_grad_by_hand(logprobs, old_logprobs, advantages, mask):
    """d loss / d logprobs = -A * ratio / n where masked-in and the clip is not binding, else 0.

    The clip binds when A > 0 and ratio > 1 + eps, or A < 0 and ratio < 1 - eps (then the loss is constant
    in logprobs). n = number of masked-in tokens.
    """
    ratio = np.exp(logprobs.astype(np.float64) - old_logprobs)
    binding = ((advantages > 0) & (ratio > 1 + CLIP)) | ((advantages < 0) & (ratio < 1 - CLIP))
    return np.where((mask > 0) & ~binding, -advantages * ratio / mask.sum(), 0.0), binding


@pytest.mark.parametrize("jit", [False, True], ids=["pynative", "jit"])
def test_policy_gradient_only_on_masked_in_unclipped_tokens(batch, jit):
    args = [batch[k] for k in ("logprobs", "old_logprobs", "advantages", "response_mask")]
    grad_fn = policy_grad_jit if jit else ms.grad(_policy_loss_only)
    grad = grad_fn(*map(t, args)).asnumpy()
    expected, binding = policy_grad_by_hand(*args)
    mask = batch["response_mask"] > 0
    assert (mask & binding).any() and (mask & ~binding).any()
    close(grad, expected)
    assert np.all(grad[~mask] == 0.0)
    assert np.all(grad[mask & binding] == 0.0)
    assert np.all(grad[mask & ~binding] != 0.0)


@pytest.mark.parametrize("jit", [False, True], ids=["pynative", "jit"])
def test_value_gradient_matches_torch_autograd(batch, jit):
    torch = pytest.importorskip("torch")
    args = [batch[k] for k in ("values", "old_values", "returns", "response_mask")]
    grad_fn = value_grad_jit if jit else ms.grad(_value_loss_only)
    grad = grad_fn(*map(t, args)).asnumpy()

    values, old, returns, mask = (torch.tensor(a, dtype=torch.float64) for a in args)
    values.requires_grad_(True)
    v_clipped = old + torch.clamp(values - old, -CLIP_V, CLIP_V)
    err = torch.maximum((values - returns) ** 2, (v_clipped - returns) ** 2)
    (0.5 * (err * mask).sum() / mask.sum()).backward()
    close(grad, values.grad.numpy())
    # by hand: (V - R) / n on masked-in tokens whose clip does not bind, 0 elsewhere
    n = args[3].sum()
    binding = (np.abs(args[0] - args[1]) > CLIP_V) & (
        (args[1] + np.clip(args[0] - args[1], -CLIP_V, CLIP_V) - args[2]) ** 2 > (args[0] - args[2]) ** 2
    )
    assert binding[args[3] > 0].any()
    close(grad, np.where((args[3] > 0) & ~binding, (args[0] - args[2]) / n, 0.0))


@pytest.mark.parametrize("jit", [False, True], ids=["pynative", "jit"])
def test_ptx_gradient_wrt_logits_matches_torch(batch, jit):
    torch = pytest.importorskip("torch")
    logits, ids, mask = batch["logits"], batch["labels"], batch["response_mask"]
    grad_fn = ptx_grad_jit if jit else ms.grad(_ptx_loss_of_logits)
    grad = grad_fn(t(logits), t(ids), t(mask)).asnumpy()

    lg = torch.tensor(logits, dtype=torch.float64, requires_grad=True)
    m = torch.tensor(mask[:, 1:], dtype=torch.float64)
    nll = torch.nn.functional.cross_entropy(
        lg[:, :-1].reshape(-1, V), torch.tensor(ids[:, 1:], dtype=torch.long).reshape(-1), reduction="none"
    ).reshape(B, T - 1)
    ((nll * m).sum() / m.sum()).backward()
    close(grad, lg.grad.numpy())
    # the last position predicts nothing, and positions whose next token is masked out get no gradient
    assert np.all(grad[:, -1] == 0.0)
    assert np.all(grad[:, :-1][mask[:, 1:] == 0] == 0.0)
