"""Apply the shard layout of `mindrlhf.parallel.shard` to built Llama cells (semi-auto parallel on Ascend/GPU).

`apply_layout(model, layout)` calls `Primitive.shard(strategy)` on every matmul, batch-matmul, gather and bias add
the layout names (a bias add only where the model has the bias), keeps every Linear's operand order fixed
(`swap_decode`) and sets each cell's `pipeline_stage`; on a single device (dp = mp = pp = 1) it does nothing.
The strategies only take effect when MindSpore compiles under SEMI_AUTO_PARALLEL, which the CPU build cannot
do: on CPU this is checked as far as setting and reading back the strategies.
"""

from __future__ import annotations

from typing import Dict

from mindspore import nn

from mindrlhf.parallel.shard import LlamaLayout


# The value head (H -> 1) of the reward model and critic: batch split over dp, the tiny weight replicated.
def _value_head_strategy(dp: int):
    return ((dp, 1), (1, 1))


def _resolve(root: nn.Cell, path: str):
    node = root
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def apply_layout(model: nn.Cell, layout: LlamaLayout) -> Dict[str, tuple]:
    """Shard `model` (LlamaForCausalLM or a reward/critic ValueModel) by `layout`; returns {op path: strategy}."""
    if layout.data_parallel * layout.model_parallel * layout.pipeline_stage == 1:
        return {}
    num_layers = len(model.model.layers)
    applied: Dict[str, tuple] = {}
    for pattern, op in layout.ops.items():
        if pattern.startswith("lm_head") and not hasattr(model, "lm_head"):
            continue
        paths = [pattern.replace("*", str(i)) for i in range(num_layers)] if "*" in pattern else [pattern]
        for path in paths:
            owner, attr = path.rsplit(".", 1)
            cell = _resolve(model, owner)
            if attr == "bias_add" and not cell.has_bias:  # e.g. a Llama reward model beside a Qwen2 actor
                continue
            getattr(cell, attr).shard(op.strategy)
            applied[path] = op.strategy
    if hasattr(model, "v_head"):
        strategy = _value_head_strategy(layout.data_parallel)
        model.v_head.matmul.shard(strategy)
        applied["v_head.matmul"] = strategy
    for _, cell in model.cells_and_names():  # sharded matmuls keep the x @ W^T operand order
        if hasattr(cell, "swap_decode"):
            cell.swap_decode = False
    for i, stage in enumerate(layout.layer_stages):
        model.model.layers[i].pipeline_stage = stage
    model.model.tok_embeddings.pipeline_stage = layout.embedding_stage
    model.model.norm_out.pipeline_stage = layout.head_stage
    for head in ("lm_head", "v_head"):
        if hasattr(model, head):
            getattr(model, head).pipeline_stage = layout.head_stage
    return applied
