"""Llama building blocks: RMSNorm, embedding, linear, GQA attention, SwiGLU, decoder layer (RoPE: `rope.py`).

Parameter names and shapes follow MindFormers' Llama so its checkpoints load unchanged (see `model.py`). The
families differ only by config: `qkv_has_bias` (Qwen2: `attention.wq/wk/wv.bias`), explicit `head_dim`, RMSNorm
eps and the RoPE variant; the cells are the same.
Shape comments: B batch, T new tokens, S key length (T without cache, the cache length with it), H hidden,
nh query heads, nkv key/value heads, hd head dim, F FFN width.
"""

from __future__ import annotations

import mindspore as ms
import numpy as np
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Normal, One, Zero, initializer

from mindrlhf.models.llama.config import LlamaConfig
from mindrlhf.models.llama.rope import RotaryEmbedding, apply_rope, rotate_half

__all__ = ["RotaryEmbedding", "apply_rope", "rotate_half"]  # re-exported: their home before rope.py

_MS_DTYPES = {"float32": ms.float32, "float16": ms.float16, "bfloat16": ms.bfloat16}


def ms_dtype(name: str):
    return _MS_DTYPES[name]


def rows(x):
    """`x` as a 2-D `[-1, last]` view (free). Reduce over 2-D views: in MindSpore 2.10's CPU kernels a reduction
    over the last axis of a 3-D/4-D tensor (and any all-axes or multi-axis one) runs at ~4 ns per element, ~20x
    slower than the same reduction on the 2-D view. The same holds for the reductions autodiff creates (softmax
    backward; the sum over batch and positions behind a norm weight's gradient). Measured: issue 9."""
    return x.reshape(-1, x.shape[-1])


def mask_value(dtype) -> float:
    """Additive bias for masked scores: very negative yet finite, so a fully masked row (a left-pad query) gives
    a uniform softmax instead of NaN."""
    return -6.0e4 if dtype == ms.float16 else -1.0e9


class RMSNorm(nn.Cell):
    """y = x / sqrt(mean(x^2) + eps) * weight, computed in `compute_type` (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float, compute_type: str, param_dtype: str):
        super().__init__()
        self.weight = Parameter(initializer(One(), (dim,), ms_dtype(param_dtype)), name="weight")
        self.eps = eps
        self.compute_type = ms_dtype(compute_type)

    def construct(self, x):
        shape, dtype = x.shape, x.dtype
        x = rows(x).astype(self.compute_type)
        variance = ops.mean(ops.square(x), -1, keep_dims=True)  # (N, 1)
        # BroadcastTo + a same-shape Mul: MindSpore's CPU Mul/Add broadcasting a `[N, 1]` column (or, at this
        # size, an `[H]` row) keeps ~4x its `[N, H]` output as a workspace for the life of the graph (50 column
        # products on 2 MB: +400 MB); the explicit broadcast keeps nothing (docs/benchmarks.md, "PPO memory").
        x = x * ops.broadcast_to(ops.rsqrt(variance + self.eps), x.shape)
        x = x.astype(dtype)
        return (ops.broadcast_to(self.weight.astype(dtype), x.shape) * x).reshape(shape)  # the weight row too


class Embedding(nn.Cell):
    """Token embedding; the parameter is `embedding_weight [V, H]` as in MindFormers."""

    def __init__(self, vocab_size: int, dim: int, param_dtype: str, init_std: float = 0.02):
        super().__init__()
        self.embedding_weight = Parameter(
            initializer(Normal(init_std), (vocab_size, dim), ms_dtype(param_dtype)), name="embedding_weight"
        )
        self.gather = ops.Gather()

    def construct(self, input_ids):
        return self.gather(self.embedding_weight, input_ids, 0)  # (B, T, H)


class Linear(nn.Cell):
    """y = x W^T (+ b) with W `[out, in]` named `weight` and, when `has_bias`, b `[out]` named `bias` (zeros)."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        compute_dtype: str,
        param_dtype: str,
        init_std: float = 0.02,
        has_bias: bool = False,
    ):
        super().__init__()
        self.weight = Parameter(
            initializer(Normal(init_std), (out_dim, in_dim), ms_dtype(param_dtype)), name="weight"
        )
        self.has_bias = has_bias
        if has_bias:
            self.bias = Parameter(initializer(Zero(), (out_dim,), ms_dtype(param_dtype)), name="bias")
            self.bias_add = (
                ops.Add()
            )  # a primitive of its own, so tensor parallel can shard it with the matmul
        # Decode-sized inputs compute (W x^T)^T on one device (faster on CPU, see construct); a sharded model keeps
        # x @ W^T, the operand order its strategies describe (mindrlhf.parallel.apply turns this off).
        self.swap_decode = True
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.compute_dtype = ms_dtype(compute_dtype)
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, x):
        shape = x.shape
        x2d = x.reshape(-1, self.in_dim).astype(self.compute_dtype)
        w = self.weight.astype(self.compute_dtype)
        if self.swap_decode and 16 < x2d.shape[0] <= 128:
            # Decode-sized inputs (a rollout batch of one-token rows): on CPU, x W^T ran at 16-26 GFLOP/s for
            # 32-64 rows while (W x^T)^T ran 2x faster (measured in GRAPH mode; equal at 8 rows, slower from
            # 256). The row count is static, so this is decided once per compiled graph.
            y = self.matmul(w, x2d).transpose(1, 0)
        else:
            y = self.matmul(x2d, w)
        if self.has_bias:
            y = self.bias_add(y, self.bias.astype(self.compute_dtype))
        return y.reshape(shape[:-1] + (self.out_dim,))


class LlamaAttention(nn.Cell):
    """Grouped-query self-attention with RoPE and an optional preallocated KV cache.

    Without a cache, keys are the T new tokens. With a cache (`k_cache`, `v_cache` Parameters `[B, nkv, S, hd]`),
    the new keys/values are written in place at cache slots `[slot, slot + T)` and the queries attend to all S
    slots; `mask_bias` hides the slots that are padding or in the future.
    """

    def __init__(self, config: LlamaConfig):
        super().__init__()
        h, hd = config.hidden_size, config.head_dim
        self.n_heads = config.num_heads
        self.n_kv_heads = config.num_kv_heads
        self.head_dim = hd
        cd, pd = config.compute_dtype, config.param_init_type
        bias = config.qkv_has_bias  # Qwen2: q/k/v carry a bias, wo does not
        self.wq = Linear(h, self.n_heads * hd, cd, pd, has_bias=bias)
        self.wk = Linear(h, self.n_kv_heads * hd, cd, pd, has_bias=bias)
        self.wv = Linear(h, self.n_kv_heads * hd, cd, pd, has_bias=bias)
        self.wo = Linear(self.n_heads * hd, h, cd, pd)
        self.compute_dtype = ms_dtype(config.compute_dtype)
        # The two attention matmuls stay attributes of this cell (shard strategies name `attention.bmm_t`); the
        # core cell calls the same primitives.
        self.bmm = ops.BatchMatMul()
        self.bmm_t = ops.BatchMatMul(transpose_b=True)
        self.core = CoreAttention(
            self.n_heads, self.n_kv_heads, hd, ms_dtype(config.softmax_compute_type), self.compute_dtype,
            self.bmm, self.bmm_t,
        )  # fmt: skip
        self.scatter = ops.ScatterNdUpdate()

    def query(self, x, rope):
        """q `[B, nh, T, hd]` with RoPE applied."""
        bsz, t, _ = x.shape
        q = self.wq(x).reshape(bsz, t, self.n_heads, self.head_dim).transpose(0, 2, 1, 3)
        return apply_rope(q, rope)

    def key_value(self, x, rope):
        """(k with RoPE applied, v), each `[B, nkv, T, hd]`."""
        bsz, t, _ = x.shape
        k = self.wk(x).reshape(bsz, t, self.n_kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        v = self.wv(x).reshape(bsz, t, self.n_kv_heads, self.head_dim).transpose(0, 2, 1, 3)
        return apply_rope(k, rope), v

    def output(self, q, k, v, mask_bias):
        """wo(softmax(q k^T / sqrt(hd) + mask_bias) v): q `[B, nh, T, hd]`, k/v `[B, nkv, S, hd]` -> `[B, T, H]`."""
        bsz, _, t, _ = q.shape
        out = self.core(q, k, v, mask_bias)  # (B, nh, T, hd)
        return self.wo(out.transpose(0, 2, 1, 3).reshape(bsz, t, self.n_heads * self.head_dim))

    def construct(self, x, rope, mask_bias, k_cache=None, v_cache=None, cache_index=None):
        q = self.query(x, rope)  # (B, nh, T, hd)
        k, v = self.key_value(x, rope)  # (B, nkv, T, hd)
        if k_cache is not None:
            # cache_index: (B, nkv, T, 3) int32 of (b, head, slot); written into the Parameter in place (the CPU
            # kernel still copies the whole cache internally each call: docs/benchmarks.md, "Generation").
            k = self.scatter(k_cache, cache_index, k.astype(k_cache.dtype)).astype(
                self.compute_dtype
            )  # (B, nkv, S, hd)
            v = self.scatter(v_cache, cache_index, v.astype(v_cache.dtype)).astype(self.compute_dtype)
        return self.output(q, k, v, mask_bias)


class CoreAttention(nn.Cell):
    """softmax(q k^T / sqrt(hd) + mask_bias) v for GQA: q `[B, nh, T, hd]`, k/v `[B, nkv, S, hd]` -> `[B, nh, T, hd]`.

    A cell of its own (no parameters) so that MindFormers' `select_recompute` can recompute exactly the `[B, nh,
    T, S]` scores and probabilities in backward instead of keeping them (`recompute.py`).
    """

    def __init__(self, n_heads, n_kv_heads, head_dim, softmax_dtype, compute_dtype, bmm=None, bmm_t=None):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.n_rep = n_heads // n_kv_heads
        self.scale = 1.0 / float(np.sqrt(head_dim))
        self.softmax_dtype, self.compute_dtype = softmax_dtype, compute_dtype
        self.bmm = bmm or ops.BatchMatMul()  # probs @ v
        self.bmm_t = bmm_t or ops.BatchMatMul(transpose_b=True)  # q @ k^T

    def construct(self, q, k, v, mask_bias):
        bsz, _, t, _ = q.shape
        s = k.shape[2]
        # GQA without copying K/V: the n_rep query heads of one kv head are stacked along the query axis.
        q = q.reshape(bsz, self.n_kv_heads, self.n_rep * t, self.head_dim)  # (B, nkv, rep*T, hd)
        scores = self.bmm_t(q, k).reshape(bsz, self.n_heads, t, s)  # (B, nh, T, S)
        scores = scores.astype(self.softmax_dtype) * self.scale + mask_bias.astype(self.softmax_dtype)
        probs = ops.softmax(rows(scores), -1).astype(self.compute_dtype)  # 2-D: see `rows`
        probs = probs.reshape(bsz, self.n_kv_heads, self.n_rep * t, s)
        return self.bmm(probs, v).reshape(bsz, self.n_heads, t, self.head_dim)  # (B, nh, T, hd)


class LlamaFeedForward(nn.Cell):
    """SwiGLU (Shazeer 2020): w2(silu(w1 x) * w3 x); w1 is the gate, w3 the up projection."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        h, f = config.hidden_size, config.ffn_hidden_size
        cd, pd = config.compute_dtype, config.param_init_type
        self.w1 = Linear(h, f, cd, pd)
        self.w2 = Linear(f, h, cd, pd)
        self.w3 = Linear(h, f, cd, pd)

    def construct(self, x):
        return self.w2(ops.silu(self.w1(x)) * self.w3(x))


class LlamaDecoderLayer(nn.Cell):
    """Pre-norm block: h = x + attn(norm(x)); out = h + ffn(norm(h))."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        norm_args = (
            config.hidden_size,
            config.rms_norm_eps,
            config.layernorm_compute_type,
            config.param_init_type,
        )
        self.attention_norm = RMSNorm(*norm_args)
        self.attention = LlamaAttention(config)
        self.ffn_norm = RMSNorm(*norm_args)
        self.feed_forward = LlamaFeedForward(config)

    def construct(self, x, rope, mask_bias, k_cache=None, v_cache=None, cache_index=None):
        h = x + self.attention(self.attention_norm(x), rope, mask_bias, k_cache, v_cache, cache_index)
        return h + self.feed_forward(self.ffn_norm(h))
