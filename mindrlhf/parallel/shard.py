"""Shard strategies for the Llama cells as plain data (Megatron-style tensor parallel + pipeline stages).

Pure arithmetic: nothing here imports MindSpore or touches a cell. A strategy is what `Primitive.shard()` takes,
one tuple per input with a split count per tensor dimension. With dp = data_parallel, mp = model_parallel and
our `Linear` computing `x[N, in] @ W[out, in]^T` (N = B*T):

- column parallel (wq, wk, wv, w1, w3): `((dp, 1), (mp, 1))` - W split over its output rows, so each device
  produces out/mp whole features (whole heads for wq/wk/wv); no communication.
- row parallel (wo, w2): `((dp, mp), (1, mp))` - the input arrives split over features (the column-parallel
  output), W is split over its input columns, and the partial sums are all-reduced over the mp group.
- attention scores/context (`bmm_t`, `bmm` on `[B, heads, T, hd]`): `((dp, mp, 1, 1), (dp, mp, 1, 1))`.
- embedding gather (`embedding_weight[V, H]`, `input_ids[B, T]`): `((1, 1), (dp, 1))` when `vocab_emb_dp`
  (table replicated), else `((mp, 1), (dp, 1))` (vocab-parallel table, masked lookups summed over mp).
- lm_head: `((dp, 1), (1, 1))` when `vocab_emb_dp`, else `((dp, 1), (mp, 1))` (logits split over the vocab).
- q/k/v bias (Qwen2, `qkv_has_bias`): `((dp, mp), (mp,))` - added to the column-parallel output where it lies,
  each device holding the out/mp slice of the bias (MindFormers shards its bias add the same way).

Pipeline: layer i runs on stage `i // (num_layers // pp)`; the embedding on stage 0; `norm_out` and `lm_head`
on stage pp - 1. This mirrors MindFormers' Llama so checkpoints and strategy files line up.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

Strategy = Tuple[Tuple[int, ...], ...]
Shape = Tuple[int, ...]

COLUMN = "column"  # split the weight's output features over mp
ROW = "row"  # split the weight's input features over mp, all-reduce the output
VOCAB = "vocab"  # split the vocabulary over mp
REPLICATED = "replicated"  # weights whole on every device, batch split over dp
HEADS = "heads"  # activations split over attention heads


@dataclasses.dataclass(frozen=True)
class OpShard:
    """The strategy for one primitive of every decoder layer (or of the embedding / head)."""

    op: str  # cell path relative to LlamaForCausalLM, `*` for every layer index
    strategy: Strategy  # one split tuple per input
    inputs: Tuple[str, ...]  # what each input is, with its shape in symbols
    kind: str  # COLUMN / ROW / VOCAB / REPLICATED / HEADS


@dataclasses.dataclass(frozen=True)
class LlamaLayout:
    """The whole plan: op strategies plus the pipeline stage of every layer."""

    data_parallel: int
    model_parallel: int
    pipeline_stage: int
    ops: Dict[str, OpShard]
    layer_stages: Tuple[int, ...]  # stage of model.layers[i]
    embedding_stage: int = 0
    head_stage: int = 0  # norm_out and lm_head


def llama_layout(
    data_parallel: int,
    model_parallel: int,
    pipeline_stage: int,
    vocab_emb_dp: bool,
    num_layers: int,
    qkv_has_bias: bool = False,
) -> LlamaLayout:
    """Strategies for our Llama cells (see module docstring); `num_layers` must be divisible by `pipeline_stage`.

    `qkv_has_bias` (Qwen2) adds the strategies of the q/k/v bias adds.
    """
    dp, mp, pp = data_parallel, model_parallel, pipeline_stage
    if min(dp, mp, pp, num_layers) < 1:
        raise ValueError(
            f"split sizes and num_layers must be >= 1, got dp={dp} mp={mp} pp={pp} layers={num_layers}"
        )
    if num_layers % pp:
        raise ValueError(f"pipeline_stage={pp} does not divide num_layers={num_layers}")
    column = ((dp, 1), (mp, 1))
    row = ((dp, mp), (1, mp))
    heads = ((dp, mp, 1, 1), (dp, mp, 1, 1))
    layer = "model.layers.*."
    ops = [
        OpShard(
            "model.tok_embeddings.gather",
            ((1, 1), (dp, 1)) if vocab_emb_dp else ((mp, 1), (dp, 1)),
            ("embedding_weight [V, H]", "input_ids [B, T]"),
            REPLICATED if vocab_emb_dp else VOCAB,
        ),
        OpShard(layer + "attention.wq.matmul", column, ("x [B*T, H]", "weight [nh*hd, H]"), COLUMN),
        OpShard(layer + "attention.wk.matmul", column, ("x [B*T, H]", "weight [nkv*hd, H]"), COLUMN),
        OpShard(layer + "attention.wv.matmul", column, ("x [B*T, H]", "weight [nkv*hd, H]"), COLUMN),
        # GQA: queries grouped by kv head, [B, nkv, rep*T, hd]; split over kv heads keeps groups together.
        OpShard(layer + "attention.bmm_t", heads, ("q [B, nkv, rep*T, hd]", "k [B, nkv, S, hd]"), HEADS),
        OpShard(layer + "attention.bmm", heads, ("probs [B, nkv, rep*T, S]", "v [B, nkv, S, hd]"), HEADS),
        OpShard(layer + "attention.wo.matmul", row, ("x [B*T, nh*hd]", "weight [H, nh*hd]"), ROW),
        OpShard(layer + "feed_forward.w1.matmul", column, ("x [B*T, H]", "weight [F, H]"), COLUMN),
        OpShard(layer + "feed_forward.w3.matmul", column, ("x [B*T, H]", "weight [F, H]"), COLUMN),
        OpShard(layer + "feed_forward.w2.matmul", row, ("x [B*T, F]", "weight [H, F]"), ROW),
        OpShard(
            "lm_head.matmul",
            ((dp, 1), (1, 1)) if vocab_emb_dp else ((dp, 1), (mp, 1)),
            ("x [B*T, H]", "weight [V, H]"),
            REPLICATED if vocab_emb_dp else VOCAB,
        ),
    ]
    if qkv_has_bias:
        for name, out in (("wq", "nh*hd"), ("wk", "nkv*hd"), ("wv", "nkv*hd")):
            ops.append(
                OpShard(layer + f"attention.{name}.bias_add", ((dp, mp), (mp,)),
                        (f"y [B*T, {out}]", f"bias [{out}]"), COLUMN)
            )  # fmt: skip
    per_stage = num_layers // pp
    return LlamaLayout(
        data_parallel=dp,
        model_parallel=mp,
        pipeline_stage=pp,
        ops={o.op: o for o in ops},
        layer_stages=tuple(i // per_stage for i in range(num_layers)),
        embedding_stage=0,
        head_stage=pp - 1,
    )


def llama_layout_from_config(parallel_config, num_layers: int, qkv_has_bias: bool = False) -> LlamaLayout:
    """`llama_layout` for a `mindrlhf.parallel.config.ParallelConfig`."""
    dims = parallel_config.parallel_config
    return llama_layout(
        dims.data_parallel,
        dims.model_parallel,
        dims.pipeline_stage,
        dims.vocab_emb_dp,
        num_layers,
        qkv_has_bias,
    )


def llama_op_shapes(
    batch_size: int,
    seq_length: int,
    hidden_size: int,
    num_heads: int,
    n_kv_heads: Optional[int],
    ffn_hidden_size: int,
    vocab_size: int,
    head_dim: Optional[int] = None,
    qkv_has_bias: bool = False,
) -> Dict[str, Tuple[Shape, ...]]:
    """Input shapes of each op in `llama_layout` for one training forward (no KV cache: S = T).

    `head_dim` defaults to hidden_size // num_heads (Llama-2); Qwen2/Llama-3 YAMLs may set it explicitly.
    """
    b, t, h, v, f = batch_size, seq_length, hidden_size, vocab_size, ffn_hidden_size
    nh = num_heads
    nkv = num_heads if n_kv_heads is None else n_kv_heads
    hd = h // nh if head_dim is None else head_dim
    rep = nh // nkv
    n = b * t
    layer = "model.layers.*."
    shapes = {
        "model.tok_embeddings.gather": ((v, h), (b, t)),
        layer + "attention.wq.matmul": ((n, h), (nh * hd, h)),
        layer + "attention.wk.matmul": ((n, h), (nkv * hd, h)),
        layer + "attention.wv.matmul": ((n, h), (nkv * hd, h)),
        layer + "attention.bmm_t": ((b, nkv, rep * t, hd), (b, nkv, t, hd)),
        layer + "attention.bmm": ((b, nkv, rep * t, t), (b, nkv, t, hd)),
        layer + "attention.wo.matmul": ((n, nh * hd), (h, nh * hd)),
        layer + "feed_forward.w1.matmul": ((n, h), (f, h)),
        layer + "feed_forward.w3.matmul": ((n, h), (f, h)),
        layer + "feed_forward.w2.matmul": ((n, f), (h, f)),
        "lm_head.matmul": ((n, h), (v, h)),
    }
    if qkv_has_bias:
        for name, out in (("wq", nh * hd), ("wk", nkv * hd), ("wv", nkv * hd)):
            shapes[layer + f"attention.{name}.bias_add"] = ((n, out), (out,))
    return shapes


def check_layout(layout: LlamaLayout, shapes: Mapping[str, Sequence[Shape]]) -> List[str]:
    """Every problem with applying `layout` to tensors of `shapes` (empty list = it fits).

    Checks the rules MindSpore's semi-auto parallel enforces at compile time: one split per dimension, each
    dimension divisible by its split, each input's splits multiplying to at most the devices of one stage
    (dp * mp), and matmul operands split the same way along the contracted dimension.
    """
    problems: List[str] = []
    stage_devices = layout.data_parallel * layout.model_parallel
    for name, op in layout.ops.items():
        if name not in shapes:
            problems.append(f"{name}: no shapes given")
            continue
        op_shapes = shapes[name]
        if len(op_shapes) != len(op.strategy):
            problems.append(f"{name}: {len(op.strategy)} input strategies for {len(op_shapes)} inputs")
            continue
        for i, (split, shape) in enumerate(zip(op.strategy, op_shapes)):
            if len(split) != len(shape):
                problems.append(f"{name} input {i}: strategy {split} has {len(split)} dims, tensor {shape}")
                continue
            devices = 1
            for d, (k, size) in enumerate(zip(split, shape)):
                devices *= k
                if size % k:
                    problems.append(
                        f"{name} input {i} ({op.inputs[i]}): dim {d} of size {size} is split {k} ways"
                    )
            if stage_devices % devices:
                problems.append(
                    f"{name} input {i}: strategy {split} uses {devices} devices, not a divisor of {stage_devices}"
                )
        if name.endswith(".matmul"):  # x[N, in] @ W[out, in]^T: `in` must be split alike on both sides
            (x_split, w_split) = op.strategy
            if x_split[1] != w_split[1]:
                problems.append(
                    f"{name}: contracted dim split {x_split[1]} on x but {w_split[1]} on the weight"
                )
        elif name.endswith("bmm_t") and op.strategy[0][3] != op.strategy[1][3]:
            problems.append(f"{name}: head_dim split differently on q and k")
    return problems
