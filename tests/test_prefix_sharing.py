"""Shared-prompt ("prefix grouped") forward for GRPO groups: the prompt computed once per group of G rows gives the
plain forward's response hidden states, log-probs and gradients; the trainer's group mini-batches and
`generate(num_return_sequences=G)` give the plain path's numbers."""

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM
from mindrlhf.trainer.ppo_cells import ResponseLogprobs

TINY = dict(
    seq_length=32, hidden_size=32, num_layers=2, num_heads=4, n_kv_heads=2, vocab_size=64, multiple_of=16
)  # fmt: skip
P, N = 7, 5


def _model(**overrides):
    ms.set_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**{**TINY, **overrides}))
    if overrides.get("qkv_has_bias"):  # zero-initialised biases would test nothing
        rng = np.random.RandomState(3)
        for name, p in model.parameters_and_names():
            if name.endswith(".bias"):
                p.set_data(Tensor(rng.normal(0, 0.3, p.shape).astype(np.float32)))
    return model


@pytest.fixture(scope="module")
def tiny():
    """One model for the generate tests: its compiled generation graphs are reused across them."""
    return _model()


def _groups(num_prompts, g, seed=0):
    """Left-padded prompts (different pad per group), each repeated G times; responses padded after an EOS at
    different lengths per row. -> sequences, attention_mask `[B, P+N]` int32."""
    rng = np.random.RandomState(seed)
    b = num_prompts * g
    prompt_mask = np.ones((num_prompts, P), np.int32)
    for i in range(num_prompts):
        prompt_mask[i, : i % (P - 1)] = 0  # 0 .. P-2 pads; the last prompt token is always real
    prompts = rng.randint(3, 64, (num_prompts, P)) * prompt_mask
    resp_mask = np.ones((b, N), np.int32)
    for r in range(b):
        resp_mask[r, 1 + r % N :] = 0  # 1 .. N real response tokens
    responses = rng.randint(3, 64, (b, N)) * resp_mask
    seq = np.concatenate([np.repeat(prompts, g, 0), responses], 1).astype(np.int32)
    mask = np.concatenate([np.repeat(prompt_mask, g, 0), resp_mask], 1).astype(np.int32)
    return seq, mask


@pytest.mark.parametrize("g,bias", [(4, False), (2, True)])
def test_grouped_hidden_equals_plain_forward(g, bias):
    """hidden[:, P-1:-1] of the plain forward == the grouped forward, pads on both sides, GQA, Qwen2 biases."""
    model = _model(qkv_has_bias=bias)
    seq, mask = _groups(3, g)
    plain = model.model(Tensor(seq), Tensor(mask)).asnumpy()[:, P - 1 : -1]
    grouped = model.model.response_hidden(Tensor(seq), Tensor(mask), P, g).asnumpy()
    assert grouped.shape == (3 * g, N, TINY["hidden_size"])
    np.testing.assert_allclose(grouped, plain, rtol=1e-5, atol=1e-5)
    # the prompt really is shared: a different prompt in row 1 changes its plain output, not its grouped one
    seq[1, P - 2] = (seq[1, P - 2] + 1) % 64
    plain1 = model.model(Tensor(seq), Tensor(mask)).asnumpy()[:, P - 1 : -1]
    grouped1 = model.model.response_hidden(Tensor(seq), Tensor(mask), P, g).asnumpy()
    assert np.abs(plain1[1] - plain[1]).max() > 1e-3
    np.testing.assert_allclose(grouped1[1], grouped[1], rtol=1e-5, atol=1e-5)


def _grads(model, seq, mask, g):
    cell = ResponseLogprobs(model, P, 0.7, group_size=g)
    weights = model.trainable_params()
    rng = np.random.RandomState(5)
    w = Tensor(rng.normal(size=(seq.shape[0], N)).astype(np.float32))

    def loss_fn(s, m):
        logprobs, _ = cell(s, m)
        return (logprobs * w).sum()

    loss, grads = ms.value_and_grad(loss_fn, None, weights)(Tensor(seq), Tensor(mask))
    return float(loss.asnumpy()), [x.asnumpy() for x in grads], [p.name for p in weights]


def test_grouped_gradients_equal_plain():
    """d(sum_w * logprobs)/d(every parameter, Qwen2 biases included) equal for group_size 1 and G = 4."""
    bias = True
    model = _model(qkv_has_bias=bias)
    seq, mask = _groups(2, 4, seed=1)
    loss1, g1, names = _grads(model, seq, mask, 1)
    loss4, g4, _ = _grads(model, seq, mask, 4)
    np.testing.assert_allclose(loss4, loss1, rtol=1e-5)
    assert len(g1) == len(names) and any("bias" in n for n in names) == bias
    for name, a, b in zip(names, g1, g4):
        assert np.abs(a).max() > 0, name  # every parameter gets a gradient (the check is not vacuous)
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("eos", [None, 5])
def test_generate_num_return_sequences_equals_repeated_prompts(tiny, eos):
    """generate(prompts, num_return_sequences=G) == generate(np.repeat(prompts, G, 0)) with the same seed: the same
    tokens and masks, log-probs within 1e-5 (one prefill per prompt, its K/V copied into the [B*G] cache)."""
    model = tiny
    seq, mask = _groups(3, 1, seed=2)
    prompts, prompt_mask = seq[:, :P], mask[:, :P]
    kw = dict(max_new_tokens=6, do_sample=True, temperature=1.3, eos_token_id=eos, pad_token_id=0, seed=11)
    from mindrlhf.generation import generate

    plain = generate(model, np.repeat(prompts, 4, 0), np.repeat(prompt_mask, 4, 0), **kw)
    grouped = generate(model, prompts, prompt_mask, num_return_sequences=4, **kw)
    assert grouped.sequences.shape == (12, P + 6)
    np.testing.assert_array_equal(grouped.sequences, plain.sequences)
    np.testing.assert_array_equal(grouped.response_mask, plain.response_mask)
    np.testing.assert_allclose(grouped.logprobs, plain.logprobs, rtol=1e-5, atol=1e-5)
    # the G samples of a prompt differ (their own uniforms), so the test is not comparing copies of one row
    assert len({tuple(r) for r in grouped.sequences[:4, P:]}) > 1
    with pytest.raises(ValueError, match="num_return_sequences"):
        generate(model, prompts, prompt_mask, num_return_sequences=0, **kw)


def test_grpo_train_step_matches_the_plain_forward(tmp_path, monkeypatch):
    """A GRPO trainer (G = 4, beta > 0, entropy bonus, one mini-batch of whole groups) builds its loss on the
    shared-prompt forward; on one experience its step's loss and metrics equal the plain forward's (group_size 1)
    before the update. (Generation and the reference are covered by the tests above and tests/test_grpo_*.)"""
    from test_grpo_trainer import make_grpo_trainer

    from mindrlhf.trainer.experience import Experience
    from mindrlhf.trainer.grpo_cells import CriticFreeActorLoss
    from mindrlhf.trainer.losses import metrics_dict
    from mindrlhf.trainer.policy_losses import PolicyLoss

    monkeypatch.setattr("test_grpo_trainer.MODEL", {**TINY, "seq_length": 32})
    monkeypatch.setattr("test_grpo_trainer.PROMPT", P)
    monkeypatch.setattr("test_grpo_trainer.NEW", N)
    trainer = make_grpo_trainer(tmp_path, monkeypatch, beta=0.04, mini_batch_size=8, entropy_coef=0.01)
    assert trainer.train_group == 4 and trainer._score.group_size == 4
    c = trainer.config
    seq, att = _groups(2, 4, seed=4)
    rng = np.random.RandomState(6)
    mask = att[:, P:].astype(np.float32)
    logprobs = ResponseLogprobs(trainer.actor, P, c.temperature)(Tensor(seq), Tensor(att))[0].asnumpy()
    old = ((logprobs + rng.normal(0, 0.2, logprobs.shape)) * mask).astype(np.float32)
    ref = ((logprobs + rng.normal(0, 0.3, logprobs.shape)) * mask).astype(np.float32)
    adv = rng.normal(size=8).astype(np.float32)
    zeros = np.zeros((8, N), np.float32)
    exp = Experience(
        seq, att, mask, old, ref, None, adv, zeros, adv, None, None, None, None, np.ones(8, bool)
    )
    policy = PolicyLoss(c.clip_low, c.clip_high, c.loss_agg, c.ratio_level, c.max_new_tokens)
    plain = CriticFreeActorLoss(trainer.actor, P, c.temperature, policy, c.beta, c.entropy_coef)
    assert plain.group_size == 1
    loss, metrics = plain(*(Tensor(x) for x in (seq, att, mask, old, adv, ref)))  # before the step
    m = metrics_dict(CriticFreeActorLoss.METRICS, metrics)
    before = {n: p.asnumpy().copy() for n, p in trainer.actor.parameters_and_names()}
    out = trainer.train_step(exp)
    assert abs(m["kl"]) > 1e-3 and m["clipfrac"] > 0  # the KL term and the clip both shape this loss
    np.testing.assert_allclose(out["ppo/loss/actor"], float(loss.asnumpy()), rtol=1e-5, atol=1e-6)
    for key, name in (
        ("grpo/kl", "kl"),
        ("ppo/policy/entropy", "entropy"),
        ("ppo/policy/clipfrac", "clipfrac"),
    ):
        np.testing.assert_allclose(out[key], m[name], rtol=1e-5, atol=1e-7, err_msg=key)
    np.testing.assert_allclose(out["ppo/logprob_diff/max"], m["logprob_diff_max"], rtol=1e-4)
    assert all(not np.array_equal(p.asnumpy(), before[n]) for n, p in trainer.actor.parameters_and_names())


def test_fallbacks_and_group_order(tmp_path, monkeypatch):
    """Recompute, semi-auto parallel and a 1-token prompt use the plain forward; mini-batches that cannot hold
    whole groups shuffle rows; rows that are not groups of equal prompts are refused before a grouped graph."""
    from test_grpo_trainer import make_grpo_trainer

    from mindrlhf.models.llama.recompute import RecomputeConfig
    from mindrlhf.trainer import minibatch
    from mindrlhf.trainer.ppo_cells import check_groups

    config = LlamaConfig(**TINY)
    config.recompute_config = RecomputeConfig(select_recompute=True)
    assert ResponseLogprobs(LlamaForCausalLM(config), P, 1.0, group_size=4).group_size == 1
    model = _model()
    assert ResponseLogprobs(model, P, 1.0, group_size=4).group_size == 4
    assert ResponseLogprobs(model, 1, 1.0, group_size=4).group_size == 1
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.SEMI_AUTO_PARALLEL)
    try:
        assert ResponseLogprobs(model, P, 1.0, group_size=4).group_size == 1
    finally:
        ms.reset_auto_parallel_context()
    assert make_grpo_trainer(tmp_path, monkeypatch, mini_batch_size=2).train_group == 1  # 2 % G=4 != 0
    order = minibatch.epoch_order(12, 4, [0, 1, 2])
    assert sorted(order) == list(range(12)) and order.tolist() != list(range(12))
    np.testing.assert_array_equal(order.reshape(3, 4) - order.reshape(3, 4)[:, :1], [[0, 1, 2, 3]] * 3)
    assert (order.reshape(3, 4)[:, 0] % 4 == 0).all()
    np.testing.assert_array_equal(np.sort(minibatch.epoch_order(6, 1, [0])), np.arange(6))
    seq, mask = _groups(2, 4)
    check_groups(seq, mask, P, 4)
    check_groups(seq, mask, P, 1)
    seq[5, 0] += 1
    with pytest.raises(ValueError, match="rows 4..7 hold different prompts"):
        check_groups(seq, mask, P, 4)
    mask[1, P - 2] = 0
    with pytest.raises(ValueError, match="rows 0..3 hold different prompt masks"):
        check_groups(seq[:4], mask[:4], P, 4)
