"""Shard strategies land on the Llama cells' primitives (compiling them needs Ascend/GPU; CPU checks the wiring)."""

from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM
from mindrlhf.models.roles import ValueModel
from mindrlhf.parallel.apply import apply_layout
from mindrlhf.parallel.shard import llama_layout

CONFIG = LlamaConfig(
    seq_length=16,
    hidden_size=64,
    num_layers=4,
    num_heads=8,
    n_kv_heads=4,
    vocab_size=128,
    intermediate_size=96,
)


def _strategy(prim):
    return tuple(tuple(s) for s in prim.attrs["in_strategy"])


def test_tensor_and_pipeline_parallel_layout_is_applied():
    model = LlamaForCausalLM(CONFIG)
    applied = apply_layout(model, llama_layout(2, 4, 2, vocab_emb_dp=False, num_layers=4))
    layer = model.model.layers[3]
    assert _strategy(layer.attention.wq.matmul) == ((2, 1), (4, 1))  # column parallel
    assert _strategy(layer.attention.wo.matmul) == ((2, 4), (1, 4))  # row parallel
    assert _strategy(layer.feed_forward.w2.matmul) == ((2, 4), (1, 4))
    assert _strategy(layer.attention.bmm_t) == ((2, 4, 1, 1), (2, 4, 1, 1))  # split over kv heads
    assert _strategy(model.model.tok_embeddings.gather) == ((4, 1), (2, 1))  # vocab parallel table
    assert _strategy(model.lm_head.matmul) == ((2, 1), (4, 1))
    assert [layer.pipeline_stage for layer in model.model.layers] == [0, 0, 1, 1]
    assert model.lm_head.pipeline_stage == 1 and model.model.tok_embeddings.pipeline_stage == 0
    assert len(applied) == 2 + 9 * 4


def test_value_model_and_single_device():
    critic = ValueModel(CONFIG)
    apply_layout(critic, llama_layout(4, 2, 1, vocab_emb_dp=True, num_layers=4))
    assert _strategy(critic.v_head.matmul) == ((4, 1), (1, 1))
    assert _strategy(critic.model.tok_embeddings.gather) == ((1, 1), (4, 1))  # replicated table
    single = LlamaForCausalLM(CONFIG)
    assert apply_layout(single, llama_layout(1, 1, 1, vocab_emb_dp=True, num_layers=4)) == {}
    assert "in_strategy" not in single.model.layers[0].attention.wq.matmul.attrs


def test_qwen2_biases_are_sharded_with_their_matmuls_and_the_decode_swap_is_off():
    from dataclasses import replace

    from mindrlhf.parallel.shard import check_layout, llama_op_shapes

    qwen = replace(CONFIG, qkv_has_bias=True, head_dim=16)  # head_dim 16 != hidden 64 / 8 heads
    model = LlamaForCausalLM(qwen)
    attention = model.model.layers[0].attention
    assert attention.wq.swap_decode  # one device: the faster decode order stays on
    layout = llama_layout(2, 4, 1, vocab_emb_dp=False, num_layers=4, qkv_has_bias=True)
    applied = apply_layout(model, layout)
    assert _strategy(attention.wq.bias_add) == ((2, 4), (4,))
    assert _strategy(attention.wv.bias_add) == ((2, 4), (4,))
    assert not attention.wo.has_bias and len(applied) == 2 + 12 * 4
    assert not any(cell.swap_decode for _, cell in model.cells_and_names() if hasattr(cell, "swap_decode"))
    shapes = llama_op_shapes(2, 16, 64, 8, 4, 96, 128, head_dim=16, qkv_has_bias=True)
    assert shapes["model.layers.*.attention.wq.bias_add"] == ((32, 128), (128,))
    assert check_layout(layout, shapes) == []
    assert any("bias_add" in p for p in check_layout(llama_layout(2, 3, 1, False, 4, True), shapes))
    # A model without the biases (a Llama reward model beside a Qwen2 actor) takes the same layout.
    llama = LlamaForCausalLM(CONFIG)
    assert len(apply_layout(llama, layout)) == 2 + 9 * 4
