"""The one checkpoint loader/saver: strict name/shape checks before loading, atomic saves."""

import os

import mindspore as ms
import numpy as np
import pytest

from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM
from mindrlhf.utils.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint

SMALL = dict(
    seq_length=32,
    hidden_size=32,
    num_layers=2,
    num_heads=4,
    n_kv_heads=2,
    vocab_size=50,
    intermediate_size=40,
)


def _weights(model):
    return {n: p.asnumpy().copy() for n, p in model.parameters_and_names()}


@pytest.mark.parametrize("suffix", [".ckpt", ".safetensors"])
def test_save_load_round_trip(tmp_path, suffix):
    ms.set_seed(0)
    a = LlamaForCausalLM(LlamaConfig(**SMALL))
    ms.set_seed(1)
    b = LlamaForCausalLM(LlamaConfig(**SMALL))
    path = str(tmp_path / f"m{suffix}")
    save_checkpoint(a, path, extra={"step": 3})
    assert sorted(os.listdir(tmp_path)) == [f"m{suffix}", f"m{suffix}.sha256"]  # no temporary left behind
    assert load_checkpoint(b, path) == ["__meta__.step"]  # the extra entry is reported, not loaded
    wa, wb = _weights(a), _weights(b)
    assert all(np.array_equal(wa[n], wb[n]) for n in wa)


def test_strict_load_lists_missing_unexpected_and_mismatched_before_touching_the_model(tmp_path):
    ms.set_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMALL))
    params = {n: p.asnumpy() for n, p in model.parameters_and_names()}
    del params["lm_head.weight"]
    params["model.layers.0.attention.wq.weight"] = np.zeros((8, 32), np.float32)  # wrong shape
    params["model.extra.bias"] = np.zeros((3,), np.float32)
    params["model.norm_out.weight"] = np.full((32,), 7.0, np.float32)  # would be loaded first if unchecked
    path = str(tmp_path / "bad.ckpt")
    save_checkpoint(params, path)
    before = _weights(model)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model, path)
    msg = str(err.value)
    assert path in msg
    assert "1 missing from the checkpoint: lm_head.weight" in msg
    assert "1 unexpected in the checkpoint: model.extra.bias" in msg
    assert (
        "1 with a different shape: model.layers.0.attention.wq.weight (checkpoint [8, 32] vs model [32, 32])"
        in msg
    )
    after = _weights(model)
    assert all(np.array_equal(before[n], after[n]) for n in before)


def test_non_strict_load_takes_the_common_names(tmp_path):
    ms.set_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMALL))
    path = str(tmp_path / "part.ckpt")
    save_checkpoint(
        {
            "model.norm_out.weight": np.full((32,), 2.0, np.float32),
            "v_head.weight": np.ones((1, 32), np.float32),
        },
        path,
    )
    assert load_checkpoint(model, path, strict=False) == ["v_head.weight"]
    assert np.all(model.model.norm_out.weight.asnumpy() == 2.0)


def test_failed_save_keeps_the_old_checkpoint_and_leaves_no_partial_file(tmp_path, monkeypatch):
    ms.set_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMALL))
    path = str(tmp_path / "m.ckpt")
    save_checkpoint(model, path)
    original = open(path, "rb").read()

    def dying_save(save_obj, ckpt_file_name, **kwargs):
        with open(ckpt_file_name, "wb") as f:
            f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(ms, "save_checkpoint", dying_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(model, path)
    assert sorted(os.listdir(tmp_path)) == ["m.ckpt", "m.ckpt.sha256"]  # the old file and its checksum
    assert open(path, "rb").read() == original


def test_unreadable_checkpoint_is_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(str(tmp_path / "nope.ckpt"))
    ms.set_seed(0)
    path = str(tmp_path / "trunc.ckpt")
    save_checkpoint(LlamaForCausalLM(LlamaConfig(**SMALL)), path)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3])
    with pytest.raises(
        CheckpointError, match="trunc.ckpt: checksum mismatch"
    ):  # our file: its sha256 sidecar
        read_checkpoint(path)
    os.remove(path + ".sha256")  # a foreign file (no sidecar): MindSpore's reader fails, in one clear error
    with pytest.raises(CheckpointError, match="cannot read"):
        read_checkpoint(path)


def test_loading_copies_and_is_seen_by_compiled_graphs(tmp_path):
    """Two models loaded from one dict share nothing; a load after a graph ran is what that graph uses."""
    from mindspore import Tensor, nn

    from mindrlhf.utils.checkpoint import load_param_dict

    ms.set_seed(0)
    source = LlamaForCausalLM(LlamaConfig(**SMALL))
    params = {n: Tensor(p.asnumpy()) for n, p in source.parameters_and_names()}
    a, b = LlamaForCausalLM(LlamaConfig(**SMALL)), LlamaForCausalLM(LlamaConfig(**SMALL))
    load_param_dict(a, params)
    load_param_dict(b, params)
    ids = Tensor(np.arange(12, dtype=np.int32).reshape(2, 6))

    @ms.jit
    def forward(x):
        return a(x)

    before = forward(ids).asnumpy()
    opt = nn.SGD(a.trainable_params(), learning_rate=0.5)
    grads = ms.grad(lambda x: a(x).sum(), None, opt.parameters)(ids)
    opt(grads)  # a moves in place
    assert not np.array_equal(forward(ids).asnumpy(), before)
    assert all(np.array_equal(p.asnumpy(), params[n].asnumpy()) for n, p in b.parameters_and_names())
    load_param_dict(a, params)  # restore a after its graph ran
    assert np.array_equal(forward(ids).asnumpy(), before)


def test_a_tied_model_loads_a_checkpoint_that_also_stores_the_head_only_when_it_is_the_embedding(
    tmp_path, caplog
):
    """Some exports store lm_head.weight for a tie_word_embeddings model; an identical copy is dropped (one info
    line), a different one is refused with the field to change."""
    ms.set_seed(0)
    tied = LlamaConfig(**SMALL, tie_word_embeddings=True)
    source = LlamaForCausalLM(tied)
    weights = _weights(source)
    assert "lm_head.weight" not in weights  # the head *is* the embedding: saved once
    embedding = weights["model.tok_embeddings.embedding_weight"]
    save_checkpoint({**weights, "lm_head.weight": embedding}, str(tmp_path / "with_head.ckpt"))
    model = LlamaForCausalLM(tied)
    with caplog.at_level("INFO", logger="mindrlhf.utils.checkpoint"):
        assert load_checkpoint(model, str(tmp_path / "with_head.ckpt")) == []
    assert "the copy is not loaded" in caplog.text
    np.testing.assert_array_equal(model.lm_head.weight.asnumpy(), embedding)

    save_checkpoint({**weights, "lm_head.weight": embedding + 1.0}, str(tmp_path / "untied.ckpt"))
    with pytest.raises(CheckpointError, match="untied.ckpt.*differs from model.tok_embeddings.embedding_weight.*"
                       "set tie_word_embeddings: false"):  # fmt: skip
        load_checkpoint(LlamaForCausalLM(tied), str(tmp_path / "untied.ckpt"))
    # An untied model still refuses nothing it needs and loads its own head.
    untied = LlamaForCausalLM(LlamaConfig(**SMALL))
    load_checkpoint(untied, str(tmp_path / "untied.ckpt"))
    np.testing.assert_array_equal(untied.lm_head.weight.asnumpy(), embedding + 1.0)


def test_entry_points_drop_the_tied_copy_when_they_read_the_model_yaml(tmp_path):
    from mindrlhf.cli import common
    from mindrlhf.configs.run_config import write_run_yaml

    tied = LlamaConfig(**SMALL, tie_word_embeddings=True)
    weights = _weights(LlamaForCausalLM(tied))
    head = weights["model.tok_embeddings.embedding_weight"] * 2.0
    save_checkpoint({**weights, "lm_head.weight": head}, str(tmp_path / "m.ckpt"))
    yaml_path = write_run_yaml(tied, str(tmp_path / "m.yaml"), checkpoint=str(tmp_path / "m.ckpt"))
    inputs = common.Inputs()
    run, params = common.load_model_yaml(inputs, yaml_path)
    assert params is None and len(inputs.problems) == 1
    assert "m.ckpt (named by" in inputs.problems[0] and "tie_word_embeddings: false" in inputs.problems[0]
