"""MindFormers training checkpoints (weights + optimizer slots + TrainOneStep scalars) load as models."""

import logging

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM
from mindrlhf.trainer.rm_trainer import reward_init_params
from mindrlhf.utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, training_state_kind

SMALL = dict(seq_length=16, hidden_size=32, num_layers=1, num_heads=4, vocab_size=50, intermediate_size=40)
N_WEIGHTS = 2 + 9 * 1 + 1  # embedding, lm_head, final norm; 9 tensors per layer


def _training_checkpoint(path, drop=None, extra=None):
    """What MindFormers saves mid-training: weights, AdamWeightDecay's adam_m./adam_v./global_step (taken from a
    real MindSpore optimizer, so the names are MindSpore's own), and the TrainOneStep/loss-scale scalars."""
    ms.set_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**SMALL))
    optimizer = nn.AdamWeightDecay(model.trainable_params(), learning_rate=1e-3)
    params = {n: p.asnumpy() for n, p in model.parameters_and_names()}
    slots = {p.name: p.asnumpy() for p in optimizer.get_parameters() if p.name not in params}
    assert sum(n.startswith("adam_m.") for n in slots) == N_WEIGHTS  # MindSpore's own slot names
    assert "global_step" in slots
    params.update(slots)
    params.update(
        {
            "scale_sense": np.array(65536.0, np.float32),
            "current_iterator_step": np.array(12, np.int32),
            "last_overflow_iterator_step": np.array(3, np.int32),
            "epoch_num": np.array(1, np.int32),
            "step_num": np.array(12, np.int32),
            "learning_rate": np.array(1e-5, np.float32),
            "loss_scale": np.array(65536.0, np.float32),
        }
    )
    for name in drop or ():
        del params[name]
    params.update(extra or {})
    save_checkpoint(params, path)
    return {n: v for n, v in params.items() if training_state_kind(n) is None}


def test_training_checkpoint_loads_the_weights_and_logs_what_it_skipped(tmp_path, caplog):
    path = str(tmp_path / "llama2_rank_0-10_2.ckpt")
    weights = _training_checkpoint(path)
    ms.set_seed(1)
    model = LlamaForCausalLM(LlamaConfig(**SMALL))
    with caplog.at_level(logging.INFO, logger="mindrlhf.utils.checkpoint"):
        unused = load_checkpoint(model, path)
    assert len(unused) == 2 * N_WEIGHTS + 1 + 7  # adam_m, adam_v, global_step, 7 scalars
    for name, p in model.parameters_and_names():
        np.testing.assert_array_equal(p.asnumpy(), weights[name])
    lines = [r.getMessage() for r in caplog.records if "ignored" in r.getMessage()]
    assert len(lines) == 1, lines
    assert f"ignored {2 * N_WEIGHTS + 8} optimizer/training entries" in lines[0]
    assert f"{N_WEIGHTS} adam_m.*" in lines[0] and f"{N_WEIGHTS} adam_v.*" in lines[0]
    assert "1 global_step" in lines[0] and "1 scale_sense" in lines[0]


def test_training_checkpoint_still_fails_on_unknown_names_and_missing_weights(tmp_path):
    model = LlamaForCausalLM(LlamaConfig(**SMALL))
    extra = str(tmp_path / "extra.ckpt")
    _training_checkpoint(extra, extra={"model.layers.0.lora_a.weight": np.zeros((4, 32), np.float32)})
    with pytest.raises(
        CheckpointError, match=r"1 unexpected in the checkpoint: model\.layers\.0\.lora_a\.weight"
    ):
        load_checkpoint(model, extra)
    missing = str(tmp_path / "missing.ckpt")
    _training_checkpoint(missing, drop=["model.norm_out.weight"])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(model, missing)
    assert "1 missing from the checkpoint: model.norm_out.weight" in str(err.value)
    assert "unexpected" not in str(err.value)  # the optimizer entries are not blamed


def test_training_checkpoint_initialises_a_reward_model(tmp_path):
    """train_rm's validation path: a causal-LM training checkpoint gives the backbone, strictly checked."""
    path = str(tmp_path / "sft_train.ckpt")
    _training_checkpoint(path)
    params = ms.load_checkpoint(path)
    to_load, strict = reward_init_params(params, LlamaConfig(**SMALL), path)
    assert not strict and all(n.startswith("model.") for n in to_load)
    assert len(to_load) == N_WEIGHTS - 1  # everything but lm_head


def test_training_checkpoint_exports_to_hugging_face_without_the_optimizer_entries(tmp_path, caplog):
    from safetensors.numpy import load_file

    from mindrlhf.configs.run_config import write_run_yaml
    from mindrlhf.tools.convert_hf import ms_to_hf, ms_to_hf_name

    path = str(tmp_path / "train.ckpt")
    weights = _training_checkpoint(path)
    yaml_path = write_run_yaml(LlamaConfig(**SMALL), str(tmp_path / "m.yaml"), checkpoint=path)
    with caplog.at_level(logging.INFO, logger="mindrlhf.utils.checkpoint"):
        ms_to_hf(path, yaml_path, str(tmp_path / "hf"))
    exported = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert sorted(exported) == sorted(ms_to_hf_name(n) for n in weights)
    for name, array in weights.items():
        np.testing.assert_array_equal(exported[ms_to_hf_name(name)], array)
    assert any(
        f"ignored {2 * N_WEIGHTS + 8} optimizer/training entries" in r.getMessage() for r in caplog.records
    )
