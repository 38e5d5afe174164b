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


@pytest.mark.parametrize("g,bias", [(2, False), (4, False), (2, True)])
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


@pytest.mark.parametrize("bias", [False, True])
def test_grouped_gradients_equal_plain(bias):
    """d(sum_w * logprobs)/d(every parameter) equal for group_size 1 and G = 4 (PyNative)."""
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
