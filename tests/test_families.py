"""Qwen2 and Llama-3 in the same cells as Llama-2, chosen by config: parity with transformers through the real
converter (logits, greedy `generate`, left padding), HF round trips, published sizes, the four roles and a jitted
train step. The Llama-2 pattern is tests/test_hf_parity.py."""

import copy
import dataclasses
import json
import os

import mindspore as ms
import numpy as np
import pytest
from conftest import ROOT, run_module
from mindspore import Tensor
from mindspore.nn.utils import no_init_parameters

import mindrlhf
from mindrlhf.configs.loader import ConfigError
from mindrlhf.configs.run_config import load_run_config
from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM, llama_param_shapes
from mindrlhf.models.llama.rope import rope_inv_freq
from mindrlhf.models.roles import build_role, freeze, value_param_shapes
from mindrlhf.tools.convert_hf import ConversionError, config_from_hf, hf_to_ms
from mindrlhf.utils.checkpoint import read_checkpoint

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

QWEN_YAML = os.path.join(ROOT, "model_configs", "qwen2_5_config", "qwen2_5_tiny.yaml")
LLAMA3_YAML = os.path.join(ROOT, "model_configs", "llama3_1_config", "llama3_1_tiny.yaml")
QWEN_7B_YAML = os.path.join(ROOT, "model_configs", "qwen2_5_config", "qwen2_5_7b.yaml")
LLAMA3_8B_YAML = os.path.join(ROOT, "model_configs", "llama3_1_config", "llama3_1_8b.yaml")
VOCAB = 97
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=88,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    tie_word_embeddings=True,
    bos_token_id=1,
    eos_token_id=2,
)
# Original context 16 with head_dim 16 and theta 5e5: band 0 is interpolated, bands 1-7 divided by 8.
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 16,
}


def _save(model, tmp_path_factory, name):
    torch.manual_seed(1)
    with torch.no_grad():  # non-trivial norms and biases, so a mis-mapped one cannot hide behind 1 or 0
        for pname, p in model.named_parameters():
            if "norm" in pname:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif pname.endswith("bias"):
                p.copy_(0.5 * torch.randn_like(p))
    path = tmp_path_factory.mktemp(name) / "hf"
    model.save_pretrained(str(path), safe_serialization=True)
    return str(path)


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    """{family: (HF torch model, HF dir, our model, ckpt, yaml)}, converted by the real CLI."""
    torch.manual_seed(0)
    qwen = transformers.Qwen2ForCausalLM(
        transformers.Qwen2Config(rms_norm_eps=1e-6, rope_theta=1e6, **COMMON)
    ).eval()
    torch.manual_seed(0)
    llama3 = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(rms_norm_eps=1e-5, rope_parameters=dict(LLAMA3_ROPE), **COMMON)
    ).eval()
    out = {}
    for name, hf in (("qwen2", qwen), ("llama3", llama3)):
        hf_dir = _save(hf, tmp_path_factory, name)
        conv = tmp_path_factory.mktemp(name + "_ms")
        ckpt, yaml_path = str(conv / "m.ckpt"), str(conv / "m.yaml")
        run_module(
            "-m", "mindrlhf.tools.convert_hf", "--hf-dir", hf_dir, "--output", ckpt, "--yaml-out", yaml_path
        )
        run = load_run_config(yaml_path)
        ours = LlamaForCausalLM(run.model_config)
        mindrlhf.load_checkpoint(ours, run.checkpoint_path)
        out[name] = (hf, hf_dir, ours, ckpt, yaml_path)
    return out


FAMILIES = ("qwen2", "llama3")


def _ms(x):
    return Tensor(np.asarray(x, dtype=np.int32))


def test_converted_configs_and_tables(families):
    qwen = families["qwen2"][2].config
    assert (qwen.qkv_has_bias, qwen.tie_word_embeddings, qwen.theta, qwen.rms_norm_eps) == (
        True,
        True,
        1e6,
        1e-6,
    )
    assert qwen.extend_method == "None"
    llama3 = families["llama3"][2].config
    assert (llama3.qkv_has_bias, llama3.tie_word_embeddings, llama3.extend_method) == (False, True, "LLAMA3")
    assert llama3.scaling_factor["original_max_position_embeddings"] == 16 and llama3.theta == 5e5
    for name in FAMILIES:
        ckpt = read_checkpoint(families[name][3])
        assert "lm_head.weight" not in ckpt  # tied: one matrix, saved once under the embedding's name
        assert sorted(ckpt) == sorted(llama_param_shapes(families[name][2].config))
    assert "model.layers.1.attention.wk.bias" in read_checkpoint(families["qwen2"][3])


def test_llama3_inverse_frequencies_equal_transformers(families):
    hf = families["llama3"][0]
    got = rope_inv_freq(
        16, 5e5, "LLAMA3", {k: v for k, v in LLAMA3_ROPE.items() if k not in ("rope_type", "rope_theta")}
    )
    plain = rope_inv_freq(16, 5e5)
    np.testing.assert_allclose(got, hf.model.rotary_emb.inv_freq.numpy(), rtol=1e-6)
    # Hand-checked bands: wavelength 2*pi*5e5^(i/8); i >= 1 exceeds 16 -> divided by 8; i = 0 (6.28) is between
    # 16/4 and 16/1 -> s = (16/6.283 - 1)/3 = 0.5154, f' = (1 - s) f/8 + s f.
    np.testing.assert_allclose(got[1:], plain[1:] / 8, rtol=1e-6)
    s = (16 / (2 * np.pi) - 1) / 3
    np.testing.assert_allclose(got[0], (1 - s) / 8 + s, rtol=1e-6)


@pytest.mark.parametrize("name", FAMILIES)
def test_logits_match_transformers(families, name, rng):
    hf, _, ours, _, _ = families[name]
    ids = rng.randint(3, VOCAB, size=(3, 40))  # 40 > original context 16: the llama3 scaling is exercised
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    got = ours(_ms(ids)).asnumpy()
    assert got.shape == (3, 40, VOCAB) and got.dtype == np.float32
    assert np.abs(got - ref).max() <= 1e-4


@pytest.mark.parametrize("name", FAMILIES)
def test_left_padded_rows_equal_each_row_alone(families, name, rng):
    hf, _, ours, _, _ = families[name]
    lengths = [21, 9, 3]
    width = max(lengths)
    ids, mask = np.zeros((3, width), np.int64), np.zeros((3, width), np.int64)
    rows = [rng.randint(3, VOCAB, size=n) for n in lengths]
    for b, row in enumerate(rows):
        ids[b, width - len(row) :], mask[b, width - len(row) :] = row, 1
    got = ours(_ms(ids), _ms(mask)).asnumpy()
    for b, row in enumerate(rows):
        with torch.no_grad():
            alone = hf(torch.tensor(row[None])).logits.numpy()[0]
        assert np.abs(got[b, width - len(row) :] - alone).max() <= 1e-4, b


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_tokens_equal_transformers_generate(families, name, rng):
    hf, _, ours, _, _ = families[name]
    rows = [rng.randint(3, VOCAB, size=n) for n in (13, 5)]
    width, n_new = 13, 12
    ids, mask = np.zeros((2, width), np.int32), np.zeros((2, width), np.int32)
    for b, row in enumerate(rows):
        ids[b, width - len(row) :], mask[b, width - len(row) :] = row, 1
    out = mindrlhf.generate(ours, ids, mask, max_new_tokens=n_new)
    config = copy.deepcopy(hf.generation_config)
    config.eos_token_id = None
    for b, row in enumerate(rows):
        with torch.no_grad():
            ref = hf.generate(
                torch.tensor(row[None], dtype=torch.long),
                attention_mask=torch.ones((1, len(row)), dtype=torch.long),
                generation_config=config,
                max_new_tokens=n_new,
                do_sample=False,
            ).numpy()[0, len(row) :]
        np.testing.assert_array_equal(out.response_ids[b], ref, err_msg=f"{name} row {b}")


@pytest.mark.parametrize("name", FAMILIES)
def test_reverse_is_loaded_by_transformers_and_round_trips_bit_identically(families, name, tmp_path):
    hf, _, _, ckpt, yaml_path = families[name]
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
        cfg = json.load(f)
    assert cfg["model_type"] == {"qwen2": "qwen2", "llama3": "llama"}[name] and cfg["tie_word_embeddings"]
    from safetensors import safe_open

    with safe_open(os.path.join(hf_out, "model.safetensors"), "np") as st:
        assert "lm_head.weight" not in st.keys()
    again = transformers.AutoModelForCausalLM.from_pretrained(hf_out).eval()
    ids = torch.tensor(np.random.RandomState(3).randint(3, VOCAB, size=(2, 30)))
    with torch.no_grad():
        np.testing.assert_array_equal(again(ids).logits.numpy(), hf(ids).logits.numpy())
    ckpt2 = str(tmp_path / "again.ckpt")
    run_module("-m", "mindrlhf.tools.convert_hf", "--hf-dir", hf_out, "--output", ckpt2)
    a, b = read_checkpoint(ckpt), read_checkpoint(ckpt2)
    assert sorted(a) == sorted(b)
    for key in a:
        assert np.array_equal(a[key].asnumpy().view(np.uint32), b[key].asnumpy().view(np.uint32)), key


def test_transformers4_spelling_gives_the_same_config(families):
    with open(os.path.join(families["llama3"][1], "config.json")) as f:
        v5 = json.load(f)
    v4 = {k: v for k, v in v5.items() if k != "rope_parameters"}
    v4["rope_theta"] = 500000.0
    v4["rope_scaling"] = {k: v for k, v in LLAMA3_ROPE.items() if k != "rope_theta"}
    assert config_from_hf(v4, "v4") == config_from_hf(v5, "v5")
    linear = dict(v4, rope_scaling={"type": "linear", "factor": 2.0})
    assert config_from_hf(linear, "v4").scaling_factor == {"factor": 2.0}


def test_linear_scaling_matches_transformers(tmp_path_factory, rng):
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": 4.0},
            **COMMON,
        )
    ).eval()
    config, params = hf_to_ms(_save(hf, tmp_path_factory, "linear"))
    assert config.extend_method == "linear"
    ours = LlamaForCausalLM(config)
    ms.load_param_into_net(ours, {k: ms.Parameter(Tensor(v), name=k) for k, v in params.items()})
    ids = rng.randint(3, VOCAB, size=(2, 25))
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    assert np.abs(ours(_ms(ids)).asnumpy() - ref).max() <= 1e-4


def test_a_tied_directory_that_still_stores_lm_head_converts_without_it(families, tmp_path):
    """Older transformers wrote `lm_head.weight` even for tied models; the tied config decides."""
    import shutil

    from safetensors.numpy import load_file, save_file

    src = families["qwen2"][1]
    shutil.copytree(src, tmp_path / "hf")
    tensors = load_file(os.path.join(src, "model.safetensors"))
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
    save_file(tensors, str(tmp_path / "hf" / "model.safetensors"))
    config, params = hf_to_ms(str(tmp_path / "hf"))
    assert config.tie_word_embeddings and "lm_head.weight" not in params
    assert sorted(params) == sorted(llama_param_shapes(config))


def test_unsupported_variants_are_refused_with_the_field(families):
    with open(os.path.join(families["llama3"][1], "config.json")) as f:
        base = json.load(f)
    yarn = dict(base, rope_parameters={"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0})
    with pytest.raises(ConversionError, match="rope_type 'yarn' is not supported"):
        config_from_hf(yarn, "config.json")
    with pytest.raises(ConversionError, match="model_type.*'mistral'"):
        config_from_hf(dict(base, model_type="mistral"), "config.json")
    with pytest.raises(ConversionError, match="attention_bias"):
        config_from_hf(dict(base, attention_bias=True), "config.json")
    with pytest.raises(ConfigError, match="YARN.*not implemented") as exc:
        LlamaConfig(extend_method="YARN")
    assert exc.value.field == "extend_method"
    with pytest.raises(ConfigError, match="low_freq_factor") as exc:
        LlamaConfig(extend_method="LLAMA3", scaling_factor={"factor": 8.0})
    assert exc.value.field == "scaling_factor"


@pytest.mark.parametrize(
    "path, count",
    [(QWEN_7B_YAML, 7_615_616_512), (LLAMA3_8B_YAML, 8_030_261_248)],
)
def test_full_size_yamls_build_with_the_published_parameter_counts(path, count):
    config = load_run_config(path).model_config
    assert (
        config.compute_dtype == "bfloat16"
    )  # as MindFormers ships it; CPU has no bf16 kernels, so count in fp32
    config = dataclasses.replace(config, compute_dtype="float32")
    with no_init_parameters():
        model = LlamaForCausalLM(config)
    table = {n: tuple(p.shape) for n, p in model.parameters_and_names()}
    assert table == dict(llama_param_shapes(config))
    assert sum(int(np.prod(s)) for s in table.values()) == count


def test_explicit_head_dim_is_kept_and_written():
    config = LlamaConfig(
        hidden_size=64, num_heads=4, head_dim=32, vocab_size=50, intermediate_size=40, num_layers=1
    )
    assert llama_param_shapes(config)["model.layers.0.attention.wq.weight"] == (128, 64)
    assert config.to_dict()["head_dim"] == 32 and "head_dim" not in LlamaConfig().to_dict()
    logits = LlamaForCausalLM(config)(_ms([[1, 2, 3]]))
    assert logits.shape == (1, 3, 50)


@pytest.mark.parametrize("path", [QWEN_YAML, LLAMA3_YAML])
def test_every_role_builds_for_the_family(path):
    config = load_run_config(path).model_config
    actor = build_role(path, "causal_lm")
    reference = freeze(build_role(path, "causal_lm"))
    reward = build_role(path, "value")
    critic = build_role(path, "value")
    assert {p.name for p in actor.get_parameters()} == set(llama_param_shapes(config))
    assert {p.name for p in reference.get_parameters()} == set(llama_param_shapes(config))
    assert reference.trainable_params() == []
    for value_model in (reward, critic):
        assert {p.name: tuple(p.shape) for p in value_model.get_parameters()} == value_param_shapes(config)
    ids, mask = _ms([[5, 6, 7, 8]]), _ms([[0, 1, 1, 1]])
    assert actor(ids, mask).shape == (1, 4, 1000) and reward.score(ids, mask).shape == (1,)


def test_one_jitted_train_step_updates_every_qwen2_parameter():
    from mindrlhf.trainer.sft_trainer import SFTLoss
    from mindrlhf.trainer.train_step import TrainStep, make_optimizer

    ms.set_seed(0)
    model = build_role(QWEN_YAML, "causal_lm")
    before = {p.name: p.asnumpy().copy() for p in model.trainable_params()}
    assert any(n.endswith("wq.bias") for n in before) and "lm_head.weight" not in before
    opt = make_optimizer(model.trainable_params(), np.full(4, 1e-3, np.float32), 0.0, (0.9, 0.95), 1e-8)
    step = TrainStep(SFTLoss(model), opt, max_grad_norm=1.0, loss_scale=1.0)
    ids = _ms(np.random.RandomState(0).randint(3, 1000, size=(2, 16)))
    mask = _ms(np.ones((2, 16)))
    loss, _, overflow, _ = step(ids, mask, mask)
    assert np.isfinite(loss.asnumpy()) and not bool(overflow.asnumpy())
    unchanged = [p.name for p in model.trainable_params() if np.array_equal(p.asnumpy(), before[p.name])]
    assert unchanged == []
