"""Llama2 cells: names/shapes as MindFormers, padding invariance, KV cache, dtypes, one optimiser step."""

import mindspore as ms
import numpy as np
import pytest
from conftest import LLAMA2_7B_YAML, TINY_YAML
from mindspore import Tensor, nn

import mindrlhf
from mindrlhf.configs.loader import ConfigError
from mindrlhf.configs.run_config import load_run_config
from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM, llama_param_shapes

SMALL = dict(
    seq_length=32,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    n_kv_heads=2,
    vocab_size=97,
    intermediate_size=88,
)


@pytest.fixture(scope="module")
def small_model():
    ms.set_seed(0)
    return LlamaForCausalLM(LlamaConfig(**SMALL))


def _table(model):
    return {n: tuple(p.shape) for n, p in model.parameters_and_names()}


def test_7b_names_and_shapes_are_mindformers():
    """Built for real without allocating 7B weights (no_init_parameters), compared with MindFormers' table."""
    from mindspore.nn.utils import no_init_parameters

    config = load_run_config(LLAMA2_7B_YAML).model_config
    assert config.ffn_hidden_size == 11008
    with no_init_parameters():
        model = LlamaForCausalLM(config)
    table = _table(model)
    assert len(table) == 2 + 32 * 9 + 1
    assert table["model.tok_embeddings.embedding_weight"] == (32000, 4096)
    assert table["lm_head.weight"] == (32000, 4096)
    assert table["model.norm_out.weight"] == (4096,)
    for i in (0, 31):
        p = f"model.layers.{i}."
        assert table[p + "attention_norm.weight"] == (4096,)
        assert table[p + "ffn_norm.weight"] == (4096,)
        for w in ("wq", "wk", "wv", "wo"):
            assert table[p + f"attention.{w}.weight"] == (4096, 4096)
        assert table[p + "feed_forward.w1.weight"] == (11008, 4096)
        assert table[p + "feed_forward.w3.weight"] == (11008, 4096)
        assert table[p + "feed_forward.w2.weight"] == (4096, 11008)
    assert table == dict(llama_param_shapes(config))
    assert sum(int(np.prod(s)) for s in table.values()) == 6_738_415_616  # Llama-2-7b's published count


def test_ffn_rule_and_gqa_shapes():
    assert LlamaConfig(hidden_size=4096, num_heads=32, multiple_of=256).ffn_hidden_size == 11008
    assert (
        LlamaConfig(
            hidden_size=8192, num_heads=64, n_kv_heads=8, multiple_of=4096, ffn_dim_multiplier=1.3
        ).ffn_hidden_size
        == 28672
    )  # Llama-2-70B
    model = LlamaForCausalLM(LlamaConfig(**SMALL))
    table = _table(model)
    assert table["model.layers.0.attention.wk.weight"] == (2 * 16, 64)
    assert table["model.layers.0.feed_forward.w1.weight"] == (88, 64)
    assert table == dict(llama_param_shapes(model.config))


def test_left_padding_gives_each_row_its_own_logits(small_model, rng):
    lengths = [9, 5, 1]
    width = max(lengths)
    ids = np.zeros((3, width), np.int32)
    mask = np.zeros((3, width), np.int32)
    rows = [rng.randint(3, 97, size=n).astype(np.int32) for n in lengths]
    for b, row in enumerate(rows):
        ids[b, width - len(row) :] = row
        mask[b, width - len(row) :] = 1
    batch = small_model(Tensor(ids), Tensor(mask)).asnumpy()
    assert np.isfinite(batch).all()
    for b, row in enumerate(rows):
        alone = small_model(Tensor(row[None])).asnumpy()[0]
        np.testing.assert_allclose(batch[b, width - len(row) :], alone, atol=1e-5)


class _CachedStep(nn.Cell):
    """What the generation loop compiles: one forward over the cache, jitted once for a fixed T."""

    def __init__(self, model, cache):
        super().__init__(auto_prefix=False)
        self.model, self.cache = model, cache

    @ms.jit
    def construct(self, input_ids, attention_mask, slot):
        return self.model(input_ids, attention_mask, None, self.cache.k, self.cache.v, slot)


@pytest.mark.parametrize("jit", [False, True])
def test_kv_cache_matches_full_forward_at_every_position(small_model, rng, jit):
    prompt, total, slots = 6, 14, 16
    ids = rng.randint(3, 97, size=(2, total)).astype(np.int32)
    mask = np.ones((2, total), np.int32)
    mask[1, :3] = 0  # row 1 is left-padded by 3
    full = small_model(Tensor(ids), Tensor(mask)).asnumpy()
    cache = small_model.new_kv_cache(2, slots)
    step = (
        _CachedStep(small_model, cache)
        if jit
        else (lambda i, m, s: small_model(i, m, None, cache.k, cache.v, s))
    )
    key_mask = np.zeros((2, slots), np.int32)
    key_mask[:, :prompt] = mask[:, :prompt]
    out = step(Tensor(ids[:, :prompt]), Tensor(key_mask), Tensor(0, ms.int32)).asnumpy()
    real = mask[:, :prompt] > 0
    np.testing.assert_allclose(out[real], full[:, :prompt][real], atol=1e-5)
    for t in range(prompt, total):
        key_mask[:, t] = 1
        out = step(Tensor(ids[:, t : t + 1]), Tensor(key_mask), Tensor(t, ms.int32)).asnumpy()
        np.testing.assert_allclose(out[:, 0], full[:, t], atol=1e-5, err_msg=f"position {t}")


def test_float16_runs_and_bfloat16_is_refused_on_cpu(rng):
    half = dict(
        SMALL,
        compute_dtype="float16",
        param_init_type="float16",
        softmax_compute_type="float16",
        rotary_dtype="float16",
    )
    logits = LlamaForCausalLM(LlamaConfig(**half))(Tensor(rng.randint(3, 97, (2, 8)).astype(np.int32)))
    assert logits.dtype == ms.float32 and np.isfinite(logits.asnumpy()).all()
    with pytest.raises(ConfigError, match="bfloat16 does not run on CPU"):
        LlamaForCausalLM(LlamaConfig(**dict(SMALL, compute_dtype="bf16")))


def test_one_optimizer_step_changes_every_parameter(rng):
    ms.set_seed(1)
    model = LlamaForCausalLM(LlamaConfig(**SMALL))
    params = model.trainable_params()
    before = {p.name: p.asnumpy().copy() for p in params}
    optimizer = nn.AdamWeightDecay(params, learning_rate=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    ids = Tensor(rng.randint(3, 97, (2, 10)).astype(np.int32))

    def forward(input_ids):
        logits = model(input_ids[:, :-1])
        return loss_fn(logits.reshape(-1, 97), input_ids[:, 1:].reshape(-1))

    grad_fn = ms.value_and_grad(forward, None, optimizer.parameters)
    loss, grads = grad_fn(ids)
    optimizer(grads)
    assert np.isfinite(loss.asnumpy())
    unchanged = [p.name for p in params if np.array_equal(before[p.name], p.asnumpy())]
    assert len(params) == len(llama_param_shapes(model.config)) and not unchanged


def test_public_api_and_tiny_yaml():
    config = mindrlhf.load_run_config(TINY_YAML).model_config
    assert (config.num_heads, config.num_kv_heads, config.ffn_hidden_size) == (4, 2, 352)
    model = mindrlhf.LlamaForCausalLM(config)
    logits = model(Tensor(np.array([[1, 5, 9]], np.int32)))
    assert isinstance(logits, Tensor) and logits.shape == (1, 3, 1000)


def test_one_token_rope_matrix_equals_rotate_half(rng):
    """The decode step rotates q/k with one matrix per row; it must equal x * cos + rotate_half(x) * sin."""
    from mindrlhf.models.llama.layers import RotaryEmbedding, apply_rope

    hd = 8
    rotary = RotaryEmbedding(hd, 10000.0, "float32")
    positions = np.array([[0], [5], [17]], np.int32)
    x = rng.randn(3, 4, 1, hd).astype(np.float32)
    (matrix,) = rotary(Tensor(positions))
    assert matrix.shape == (3, hd, hd)
    got = apply_rope(Tensor(x), (matrix,)).asnumpy()
    inv_freq = 1.0 / 10000.0 ** (np.arange(0, hd, 2) / hd)
    angles = np.concatenate([positions * inv_freq] * 2, -1)[:, None, None, :]  # (3, 1, 1, hd)
    rotated = np.concatenate([-x[..., hd // 2 :], x[..., : hd // 2]], -1)
    np.testing.assert_allclose(got, x * np.cos(angles) + rotated * np.sin(angles), atol=1e-5)
    # The multi-token form gives the same rotation.
    cos, sin = rotary(Tensor(np.repeat(positions, 2, 1)))
    np.testing.assert_allclose(
        apply_rope(Tensor(np.repeat(x, 2, 2)), (cos, sin)).asnumpy()[:, :, :1], got, atol=1e-5
    )
