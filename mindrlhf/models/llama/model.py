"""Llama as MindFormers names it: `LlamaModel` (hidden states) and `LlamaForCausalLM` (logits).

Parameter table (i = layer; nh, nkv query/kv heads; hd head dim, nh·hd = H unless `head_dim` is set; F = ffn
width; V = vocab). `[bias]`: only with `qkv_has_bias` (Qwen2); `[untied]`: absent with `tie_word_embeddings`,
where the head multiplies by the embedding matrix (MindFormers ties the same way, so its checkpoints hold no
lm_head either):
    model.tok_embeddings.embedding_weight        [V, H]
    model.layers.{i}.attention_norm.weight       [H]
    model.layers.{i}.attention.wq.weight         [nh*hd, H]
    model.layers.{i}.attention.wq.bias           [nh*hd]        [bias]
    model.layers.{i}.attention.wk.weight         [nkv*hd, H]
    model.layers.{i}.attention.wk.bias           [nkv*hd]       [bias]
    model.layers.{i}.attention.wv.weight         [nkv*hd, H]
    model.layers.{i}.attention.wv.bias           [nkv*hd]       [bias]
    model.layers.{i}.attention.wo.weight         [H, nh*hd]
    model.layers.{i}.ffn_norm.weight             [H]
    model.layers.{i}.feed_forward.w1.weight      [F, H]   (gate)
    model.layers.{i}.feed_forward.w3.weight      [F, H]   (up)
    model.layers.{i}.feed_forward.w2.weight      [H, F]   (down)
    model.norm_out.weight                        [H]
    lm_head.weight                               [V, H]         [untied]

Padding: rows may be left-padded; positions come from `attention_mask` (cumsum - 1) so every row computes what
it would compute alone. The KV cache (`KVCache`) is preallocated with a static shape `[B, nkv, S, hd]` per layer
and written in place, so a jitted one-token step compiles once.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import Parameter, ParameterTuple, Tensor, nn, ops

from mindrlhf.configs.loader import ConfigError
from mindrlhf.models.llama.config import LlamaConfig
from mindrlhf.models.llama.grouped import grouped_response_hidden
from mindrlhf.models.llama.layers import (
    Embedding,
    Linear,
    LlamaDecoderLayer,
    RMSNorm,
    RotaryEmbedding,
    mask_value,
    ms_dtype,
)
from mindrlhf.models.llama.recompute import apply_recompute


def llama_param_shapes(config: LlamaConfig, prefix: str = "model.") -> Dict[str, Tuple[int, ...]]:
    """The MindFormers parameter table of `LlamaForCausalLM(config)` (names -> shapes) without building it."""
    h, hd, f, v = config.hidden_size, config.head_dim, config.ffn_hidden_size, config.vocab_size
    nh, nkv = config.num_heads, config.num_kv_heads
    table = OrderedDict()
    table[f"{prefix}tok_embeddings.embedding_weight"] = (v, h)
    for i in range(config.num_layers):
        p = f"{prefix}layers.{i}."
        table[p + "attention_norm.weight"] = (h,)
        for proj, out in (("wq", nh * hd), ("wk", nkv * hd), ("wv", nkv * hd)):
            table[p + f"attention.{proj}.weight"] = (out, h)
            if config.qkv_has_bias:
                table[p + f"attention.{proj}.bias"] = (out,)
        table[p + "attention.wo.weight"] = (h, nh * hd)
        table[p + "ffn_norm.weight"] = (h,)
        table[p + "feed_forward.w1.weight"] = (f, h)
        table[p + "feed_forward.w2.weight"] = (h, f)
        table[p + "feed_forward.w3.weight"] = (f, h)
    table[f"{prefix}norm_out.weight"] = (h,)
    if not config.tie_word_embeddings:
        table["lm_head.weight"] = (v, h)
    return table


class KVCache(nn.Cell):
    """Preallocated keys and values, one `[B, nkv, S, hd]` Parameter pair per layer (not model weights).

    `auto_prefix=False` keeps the model's parameter names unchanged when both live in one wrapper cell.
    """

    def __init__(self, config: LlamaConfig, batch_size: int, max_length: int):
        super().__init__(auto_prefix=False)
        shape = (batch_size, config.num_kv_heads, max_length, config.head_dim)
        dtype = ms_dtype(config.compute_dtype)
        zeros = np.zeros(shape, dtype=np.float32)

        def make(kind, i):
            return Parameter(Tensor(zeros, dtype), name=f"kv_cache.{kind}.{i}", requires_grad=False)

        self.k = ParameterTuple([make("k", i) for i in range(config.num_layers)])
        self.v = ParameterTuple([make("v", i) for i in range(config.num_layers)])
        self.batch_size = batch_size
        self.max_length = max_length


def _check_device_dtypes(config: LlamaConfig) -> None:
    """bfloat16 has no CPU kernels in MindSpore 2.10 (MatMul, Gather): say so before a cryptic kernel error."""
    if ms.get_context("device_target") != "CPU":
        return
    for name in (
        "compute_dtype",
        "param_init_type",
        "softmax_compute_type",
        "layernorm_compute_type",
        "rotary_dtype",
    ):
        if getattr(config, name) == "bfloat16":
            raise ConfigError(
                "bfloat16 does not run on CPU in MindSpore 2.10 (no bfloat16 MatMul/Gather kernels); "
                "use float32 on CPU (float16 runs but slowly) and keep bfloat16 for Ascend/GPU",
                field=f"model.model_config.{name}",
            )


class LlamaModel(nn.Cell):
    """Embedding, `num_layers` decoder layers and the final RMSNorm: `input_ids [B, T]` -> hidden `[B, T, H]`."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.num_layers = config.num_layers
        self.n_kv_heads = config.num_kv_heads
        self.num_heads = config.num_heads
        self.tok_embeddings = Embedding(config.vocab_size, config.hidden_size, config.param_init_type)
        self.layers = nn.CellList([LlamaDecoderLayer(config) for _ in range(config.num_layers)])
        # MindFormers' recompute_config: only graphs with a backward (actor / critic / SFT / RM steps) change.
        self.recompute_applied = apply_recompute(
            self.layers, config.recompute_config, attention_of=lambda layer: layer.attention.core
        )
        self.norm_out = RMSNorm(
            config.hidden_size, config.rms_norm_eps, config.layernorm_compute_type, config.param_init_type
        )
        self.rotary = RotaryEmbedding(
            config.head_dim, config.theta, config.rotary_dtype, config.extend_method, config.scaling_factor
        )
        self.compute_dtype = ms_dtype(config.compute_dtype)
        self.mask_value = mask_value(ms_dtype(config.softmax_compute_type))

    def construct(
        self, input_ids, attention_mask=None, position_ids=None, k_caches=None, v_caches=None, cache_slot=None
    ):
        """Hidden states `[B, T, H]`.

        Without a cache: `attention_mask [B, T]` (1 = real token, 0 = padding; None = all real).
        With a cache (`k_caches`, `v_caches` from `KVCache`, `cache_slot` a 0-d int32 Tensor): the T new tokens
        occupy cache slots `[cache_slot, cache_slot + T)` and `attention_mask [B, S]` marks which of the S cache
        slots hold real tokens (the new ones included). Positions default to `cumsum(mask) - 1`.
        """
        bsz, t = input_ids.shape
        use_cache = k_caches is not None
        if attention_mask is None:
            attention_mask = ops.ones((bsz, t), ms.int32)
        key_mask = attention_mask.astype(ms.int32)
        s = key_mask.shape[1]
        offset = cache_slot.astype(ms.int32) if use_cache else ops.zeros((), ms.int32)
        q_slots = ops.arange(0, t, dtype=ms.int32) + offset  # (T,)
        if position_ids is None:
            positions = ops.clamp(ops.cumsum(key_mask, 1) - 1, min=0)  # (B, S)
            position_ids = ops.gather(positions, q_slots, 1) if use_cache else positions
        k_slots = ops.arange(0, s, dtype=ms.int32)
        causal = k_slots.reshape(1, 1, 1, s) <= q_slots.reshape(1, 1, t, 1)  # (1, 1, T, S)
        allowed = ops.logical_and(causal, key_mask.reshape(bsz, 1, 1, s) > 0)  # (B, 1, T, S)
        mask_bias = self.mask_bias(allowed)  # (B, nh, T, S)
        rope = self.rotary(position_ids)  # (cos, sin) or, for one new token, (rotation matrices,)
        cache_index = None
        if use_cache:
            b_idx = ops.arange(0, bsz, dtype=ms.int32).reshape(bsz, 1, 1, 1)
            h_idx = ops.arange(0, self.n_kv_heads, dtype=ms.int32).reshape(1, self.n_kv_heads, 1, 1)
            shape = (bsz, self.n_kv_heads, t, 1)
            cache_index = ops.cat(
                (
                    ops.broadcast_to(b_idx, shape),
                    ops.broadcast_to(h_idx, shape),
                    ops.broadcast_to(q_slots.reshape(1, 1, t, 1), shape),
                ),
                -1,
            )  # (B, nkv, T, 3) of (batch, kv head, slot)
        h = self.tok_embeddings(input_ids).astype(self.compute_dtype)
        for i in range(self.num_layers):
            if use_cache:
                h = self.layers[i](h, rope, mask_bias, k_caches[i], v_caches[i], cache_index)
            else:
                h = self.layers[i](h, rope, mask_bias)
        return self.norm_out(h)

    def mask_bias(self, allowed):
        """Additive attention bias `[B, nh, T, S]` (0 where `allowed [B, 1, T, S]`, else the mask value).

        Broadcast once here, not in each layer's `scores + mask_bias`: MindSpore's CPU broadcasting Add keeps ~4x
        its output as a workspace per kernel (docs/benchmarks.md), a same-shape Add does not."""
        bias = ops.select(allowed, ops.zeros((), ms.float32), ops.full((), self.mask_value, dtype=ms.float32))
        b, _, t, s = allowed.shape
        return ops.broadcast_to(bias, (b, self.num_heads, t, s))

    def grouped_forward_supported(self) -> bool:
        """Whether `response_hidden` may share prompts: not with recompute configured (the recompute marks are on
        the plain path's cells and calls) and not in semi/auto parallel (the shard strategies describe the plain
        path's shapes); those fall back to the plain forward."""
        recompute = any(self.recompute_applied.values())
        mode = ms.get_auto_parallel_context("parallel_mode")
        return not recompute and mode not in (
            ms.ParallelMode.SEMI_AUTO_PARALLEL,
            ms.ParallelMode.AUTO_PARALLEL,
        )

    def response_hidden(self, sequences, attention_mask, prompt_length: int, group_size: int):
        """Hidden states `[B, N, H]` that predict the N response tokens of `sequences [B, P+N]` (positions
        P-1 .. P+N-2, after norm_out), rows in contiguous groups of `group_size` identical prompts, each prompt
        computed once per group (`grouped.py`; the plain forward's values to float32 rounding). The caller checks
        `grouped_forward_supported()` and the groups; the plain path is `construct` and a slice."""
        return grouped_response_hidden(self, sequences, attention_mask, prompt_length, group_size)


class LlamaForCausalLM(nn.Cell):
    """Llama language model: `model(input_ids, attention_mask=None)` -> float32 logits `[B, T, V]`.

    With `tie_word_embeddings` the head's weight *is* the embedding Parameter (one tensor, trained by both uses,
    saved once as `model.tok_embeddings.embedding_weight`), as in MindFormers' LlamaForCausalLM.
    """

    def __init__(self, config: LlamaConfig):
        super().__init__()
        _check_device_dtypes(config)
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = Linear(
            config.hidden_size, config.vocab_size, config.compute_dtype, config.param_init_type
        )
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.tok_embeddings.embedding_weight

    def construct(
        self, input_ids, attention_mask=None, position_ids=None, k_caches=None, v_caches=None, cache_slot=None
    ):
        hidden = self.model(input_ids, attention_mask, position_ids, k_caches, v_caches, cache_slot)
        return self.lm_head(hidden).astype(ms.float32)

    def new_kv_cache(self, batch_size: int, max_length: Optional[int] = None) -> KVCache:
        """A zeroed static-shape cache for `batch_size` rows and `max_length` slots (default `seq_length`)."""
        return KVCache(self.config, batch_size, max_length or self.config.seq_length)
