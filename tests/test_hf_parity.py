"""Our Llama2 against transformers' LlamaForCausalLM, through the real conversion CLI."""

import json
import os

import numpy as np
import pytest
from conftest import run_module

import mindrlhf
from mindrlhf.configs.run_config import load_run_config
from mindrlhf.tools.convert_hf import ConversionError, hf_to_ms
from mindrlhf.utils.checkpoint import read_checkpoint

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def ours(converted_tiny):
    ckpt, yaml_path = converted_tiny
    run = load_run_config(yaml_path)
    assert run.checkpoint_path == ckpt
    model = mindrlhf.LlamaForCausalLM(run.model_config)
    mindrlhf.load_checkpoint(model, run.checkpoint_path)
    return model


def _ms(x):
    from mindspore import Tensor

    return Tensor(np.asarray(x, dtype=np.int32))


def test_logits_match_transformers(hf_tiny, ours, rng):
    hf, _ = hf_tiny
    ids = rng.randint(3, 101, size=(3, 17))
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    got = ours(_ms(ids)).asnumpy()
    assert got.shape == (3, 17, 101) and got.dtype == np.float32
    assert np.abs(got - ref).max() <= 1e-4


def test_left_padded_batch_matches_transformers(hf_tiny, ours, rng):
    """Rows of different lengths, left-padded: each real position equals HF on the unpadded row."""
    hf, _ = hf_tiny
    lengths = [12, 7, 3]
    width = max(lengths)
    ids = np.zeros((3, width), np.int64)
    mask = np.zeros((3, width), np.int64)
    rows = [rng.randint(3, 101, size=n) for n in lengths]
    for b, row in enumerate(rows):
        ids[b, width - len(row) :] = row
        mask[b, width - len(row) :] = 1
    got = ours(_ms(ids), _ms(mask)).asnumpy()
    # HF on the same padded batch, with the positions it needs for left padding.
    position_ids = np.clip(np.cumsum(mask, 1) - 1, 0, None)
    with torch.no_grad():
        ref_batch = hf(
            torch.tensor(ids), attention_mask=torch.tensor(mask), position_ids=torch.tensor(position_ids)
        ).logits.numpy()
    for b, row in enumerate(rows):
        with torch.no_grad():
            alone = hf(torch.tensor(row[None])).logits.numpy()[0]
        real = got[b, width - len(row) :]
        assert np.abs(real - alone).max() <= 1e-4, b
        assert np.abs(real - ref_batch[b, width - len(row) :]).max() <= 1e-4, b


def test_reverse_round_trip_is_bit_identical(converted_tiny, tmp_path):
    ckpt, yaml_path = converted_tiny
    hf_out = str(tmp_path / "hf_again")
    run_module(
        "-m",
        "mindrlhf.tools.convert_hf",
        "--reverse",
        "--ckpt",
        ckpt,
        "--yaml",
        yaml_path,
        "--hf-out",
        hf_out,
    )
    with open(os.path.join(hf_out, "config.json")) as f:
        assert json.load(f)["num_key_value_heads"] == 2
    ckpt2 = str(tmp_path / "again.ckpt")
    run_module("-m", "mindrlhf.tools.convert_hf", "--hf-dir", hf_out, "--output", ckpt2)
    a = read_checkpoint(ckpt)
    b = read_checkpoint(ckpt2)
    assert sorted(a) == sorted(b)
    for name in a:
        x, y = a[name].asnumpy(), b[name].asnumpy()
        assert x.dtype == y.dtype and np.array_equal(x.view(np.uint32), y.view(np.uint32)), name


def test_bf16_sharded_and_transformers5_config(hf_tiny, tmp_path):
    """bf16 weights in two shards with an index, and transformers 5 spellings (`dtype`, `rope_parameters`)."""
    from safetensors.torch import save_file

    hf, _ = hf_tiny
    state = {k: v.to(torch.bfloat16).contiguous() for k, v in hf.state_dict().items()}
    names = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": names[: len(names) // 2],
        "model-00002-of-00002.safetensors": names[len(names) // 2 :],
    }
    weight_map = {}
    for shard, keys in shards.items():
        save_file({k: state[k] for k in keys}, str(tmp_path / shard))
        weight_map.update({k: shard for k in keys})
    with open(tmp_path / "model.safetensors.index.json", "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    cfg = hf.config.to_dict()
    cfg.pop("rope_theta", None)
    cfg["rope_parameters"] = {"rope_theta": 10000.0, "rope_type": "default"}
    cfg["dtype"] = "bfloat16"
    with open(tmp_path / "config.json", "w") as f:
        json.dump(cfg, f)
    config, params = hf_to_ms(str(tmp_path))
    assert config.theta == 10000.0 and config.n_kv_heads == 2 and config.ffn_hidden_size == 88
    expected = state["model.layers.1.mlp.gate_proj.weight"].float().numpy()
    np.testing.assert_array_equal(params["model.layers.1.feed_forward.w1.weight"], expected)


def test_bad_hf_dirs_give_one_clear_error(tmp_path, hf_tiny):
    with pytest.raises(ConversionError, match="config.json not found"):
        hf_to_ms(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConversionError, match="invalid JSON"):
        hf_to_ms(str(tmp_path))
    cfg = hf_tiny[0].config.to_dict()
    cfg["num_attention_heads"] = 3  # 64 % 3 != 0
    cfg.pop("head_dim", None)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="num_heads"):
        hf_to_ms(str(tmp_path))
    cfg["num_attention_heads"] = 4
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConversionError, match="no model.safetensors"):
        hf_to_ms(str(tmp_path))
    proc = run_module(
        "-m",
        "mindrlhf.tools.convert_hf",
        "--hf-dir",
        str(tmp_path),
        "--output",
        str(tmp_path / "x.ckpt"),
        check=False,
    )
    assert proc.returncode == 2 and "no model.safetensors" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.ckpt").exists()
