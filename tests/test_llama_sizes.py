"""Llama-2 7B/13B/70B as MindFormers' YAMLs describe them: FFN widths and published parameter counts.

The same checks run on the real MindFormers YAMLs in tests/test_ecosystem_real.py when ../shared is present;
these use the YAMLs' model_config numbers directly so they always run.
"""

import numpy as np
import pytest
from mindspore.nn.utils import no_init_parameters

from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM, llama_param_shapes

# model_config fields of MindFormers' run_llama2_{7b,13b,70b}.yaml (multiple_of 256 in all three).
SIZES = {
    "7b": (dict(hidden_size=4096, num_layers=32, num_heads=32), 11008, 6_738_415_616),
    "13b": (dict(hidden_size=5120, num_layers=40, num_heads=40), 13824, 13_015_864_320),
    "70b": (
        dict(hidden_size=8192, num_layers=80, num_heads=64, n_kv_heads=8, ffn_dim_multiplier=1.3),
        28672,
        68_976_648_192,
    ),
}


@pytest.mark.parametrize("size", sorted(SIZES))
def test_mindformers_widths_and_published_counts(size):
    fields, width, count = SIZES[size]
    config = LlamaConfig(multiple_of=256, vocab_size=32000, **fields)
    assert config.ffn_hidden_size == width
    with no_init_parameters():
        model = LlamaForCausalLM(config)
    table = {n: tuple(p.shape) for n, p in model.parameters_and_names() if not n.startswith("kv_cache.")}
    assert table == dict(llama_param_shapes(config))
    assert sum(int(np.prod(s)) for s in table.values()) == count


def test_the_multiplier_is_applied_before_two_thirds_as_mindformers_does():
    # Meta's reference order (2/3 first, then x1.3) would give 28416 for 70B; MindFormers scales 4H by 1.31 first.
    config = LlamaConfig(hidden_size=8192, num_heads=64, multiple_of=256, ffn_dim_multiplier=1.3)
    assert 256 * -(-int(1.3 * int(2 * 4 * 8192 / 3)) // 256) == 28416
    assert config.ffn_hidden_size == 256 * -(-int(2 * int(1.31 * 4 * 8192) / 3) // 256) == 28672
    assert LlamaConfig(hidden_size=8192, num_heads=64, intermediate_size=28000).ffn_hidden_size == 28000
