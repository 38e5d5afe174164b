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
