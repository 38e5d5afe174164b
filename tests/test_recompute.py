"""MindFormers' recompute_config: parsed from run YAMLs with its field names, applied to our decoder layers, and
changing no gradient."""

import os

import numpy as np
import pytest

from mindrlhf.configs.loader import ConfigError
from mindrlhf.models.llama.recompute import RecomputeConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_stage_lists_follow_mindformers_layer_ranges():
    # v1.5.0_finetune_llama2_70b_bf16_64p.yaml: 80 layers, 8 stages of 10; the first k layers of each stage.
    cfg = RecomputeConfig(select_recompute=[10, 8, 6, 4, 2, 0, 0, 0])
    assert cfg.layers("select_recompute", 80) == (
        list(range(0, 10)) + list(range(10, 18)) + list(range(20, 26)) + [30, 31, 32, 33, 40, 41]
    )
    assert cfg.layers("recompute", 80) == []
    assert RecomputeConfig(recompute=True).layers("recompute", 3) == [0, 1, 2]
    assert RecomputeConfig(recompute=[1]).layers("recompute", 3) == [0]
    assert RecomputeConfig(recompute=[0, 2]).layers("recompute", 5) == [2, 3]  # stage 1 = layers 2..4
    assert not RecomputeConfig().enabled and RecomputeConfig(select_recompute=[0, 1]).enabled


def test_parsed_from_run_yamls(tmp_path):
    from mindrlhf.configs.run_config import load_run_config, run_yaml_dict

    run = load_run_config(os.path.join(ROOT, "model_configs", "llama2_config", "llama2_7b.yaml"))
    rc = run.model_config.recompute_config
    assert rc.recompute is True and rc.select_recompute is False and rc.mp_comm_recompute is True
    assert "recompute_config" not in run.model_config.to_dict()  # a top-level section, not a model_config key
    assert run_yaml_dict(run.model_config)["recompute_config"]["recompute"] is True  # written back top-level

    legacy = RecomputeConfig.from_run_yaml({"parallel_config": {"data_parallel": 1, "recompute": True}})
    assert legacy.recompute is True and legacy.select_recompute is False
    assert RecomputeConfig.from_run_yaml({"parallel_config": {"data_parallel": 1}}) is None
    with pytest.raises(ConfigError, match=r"recompute_config\.select_recompute"):
        RecomputeConfig.from_run_yaml({"recompute_config": {"select_recompute": [2, -1]}}, "run.yaml")
    with pytest.raises(ConfigError, match=r"recompute_config\.recompute"):
        RecomputeConfig.from_run_yaml({"recompute_config": {"recompute": "yes"}}, "run.yaml")


def _tiny(recompute=None):
    from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        seq_length=16,
        hidden_size=32,
        intermediate_size=48,
        num_layers=2,
        num_heads=4,
        n_kv_heads=2,
        vocab_size=64,
    )
    config.recompute_config = recompute
    return LlamaForCausalLM(config)


def test_layers_report_recompute():
    from mindrlhf.models.llama.recompute import recomputed

    full = _tiny(RecomputeConfig(recompute=True)).model.layers
    assert all(recomputed(layer) for layer in full)
    select = _tiny(RecomputeConfig(select_recompute=True)).model.layers
    assert not any(recomputed(layer) for layer in select)
    assert all(recomputed(layer.attention.core) for layer in select)
    first = _tiny(RecomputeConfig(recompute=[1], select_recompute=True)).model.layers
    assert recomputed(first[0]) and not recomputed(first[1])
    assert recomputed(first[1].attention.core)  # full on layer 0 wins; select on the rest
    assert not any(recomputed(c) for layer in _tiny().model.layers for c in (layer, layer.attention.core))


def test_gradients_identical_with_and_without_recompute():
    """One GRAPH-mode backward of a next-token NLL; recompute reruns forward ops, so every gradient agrees.
    One model covers both kinds (layer 0 full, layer 1 select): two compiles, not three."""
    import mindspore as ms
    from mindspore import ParameterTuple, Tensor, nn, ops

    from mindrlhf.trainer import losses

    class Nll(nn.Cell):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def construct(self, ids):
            return -losses.gather_logprobs(self.model(ids)[:, :-1], ids[:, 1:]).mean()

    class Grads(nn.Cell):
        def __init__(self, net):
            super().__init__()
            self.net, self.weights = net, ParameterTuple(net.trainable_params())
            self.grad = ops.GradOperation(get_by_list=True)

        def construct(self, ids):
            return self.grad(self.net, self.weights)(ids)

    mode = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        ms.set_seed(0)
        models = [_tiny(), _tiny(RecomputeConfig(recompute=[1], select_recompute=True))]
        for other in models[1:]:
            for (_, a), (_, b) in zip(models[0].parameters_and_names(), other.parameters_and_names()):
                b.set_data(Tensor(a.asnumpy()))
        ids = Tensor(np.random.default_rng(0).integers(3, 64, (2, 12)).astype(np.int32))
        grads = [[g.asnumpy() for g in Grads(Nll(m))(ids)] for m in models]
    finally:
        ms.set_context(mode=mode)
    assert len(grads[0]) == len(list(models[0].trainable_params()))
    assert all(np.abs(g).max() > 0 for g in grads[0][1:])  # every weight but the embedding rows is reached
    for other in grads[1:]:
        for g0, g1 in zip(grads[0], other):
            np.testing.assert_allclose(g1, g0, rtol=1e-5, atol=1e-7)
