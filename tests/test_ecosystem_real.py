"""Public files MindRLHF users already have (../shared/ecosystem_real, see its SOURCES.md), loaded as they are.

Read from the folder at test time, never copied into the project; every test skips with the reason when it is
absent.
"""

import glob
import json
import logging
import os

import numpy as np
import pytest
from conftest import ROOT

REAL = os.path.join(os.path.dirname(ROOT), "shared", "ecosystem_real")
pytestmark = pytest.mark.skipif(
    not os.path.isdir(REAL),
    reason=f"{REAL} is absent (public MindFormers/MindRLHF files, see its SOURCES.md)",
)


def _files(pattern):
    return sorted(glob.glob(os.path.join(REAL, pattern))) if os.path.isdir(REAL) else []


RUN_YAMLS = _files("mindformers/*.yaml") + _files("mindrlhf/*.yaml")
# The model card's 2-server sample keeps MindFormers' placeholder server ids ("xx.xx.xx.xx", twice): not usable.
PLACEHOLDER_TABLE = "mf_llama2_card_16p.json"
RANK_TABLES = [p for p in _files("ranktable/*.json") if os.path.basename(p) != PLACEHOLDER_TABLE]
# Llama-2's published widths and parameter counts, by hidden size.
WIDTH = {4096: 11008, 5120: 13824, 8192: 28672}
PARAMS = {4096: 6_738_415_616, 5120: 13_015_864_320, 8192: 68_976_648_192}


@pytest.mark.parametrize("path", RUN_YAMLS, ids=os.path.basename)
def test_every_run_yaml_gives_the_published_llama2_widths(path):
    from mindrlhf.configs.run_config import load_run_config
    from mindrlhf.models.llama import llama_param_shapes

    config = load_run_config(path).model_config
    assert config.ffn_hidden_size == WIDTH[config.hidden_size]
    total = sum(int(np.prod(s)) for s in llama_param_shapes(config).values())
    assert total == PARAMS[config.hidden_size]


def test_all_three_sizes_are_covered():
    from mindrlhf.configs.run_config import load_run_config

    sizes = {load_run_config(p).model_config.hidden_size for p in RUN_YAMLS}
    assert sizes == set(WIDTH)
    assert len([p for p in RUN_YAMLS if "70b" in os.path.basename(p)]) == 5


@pytest.mark.parametrize("name", ["v1.0.0_run_llama2_13b.yaml", "v1.5.0_pretrain_llama2_70b.yaml"])
def test_13b_and_70b_cells_have_the_published_parameter_counts(name):
    """The cells themselves (not only the shape table), built without allocating the weights."""
    from mindspore.nn.utils import no_init_parameters

    from mindrlhf.configs.run_config import load_run_config
    from mindrlhf.models.llama import LlamaForCausalLM, llama_param_shapes

    config = load_run_config(os.path.join(REAL, "mindformers", name)).model_config
    with no_init_parameters():
        model = LlamaForCausalLM(config)
    table = {n: tuple(p.shape) for n, p in model.parameters_and_names() if not n.startswith("kv_cache.")}
    assert table == dict(llama_param_shapes(config))
    assert sum(int(np.prod(s)) for s in table.values()) == PARAMS[config.hidden_size]
    w1 = table["model.layers.0.feed_forward.w1.weight"]
    assert w1 == (WIDTH[config.hidden_size], config.hidden_size)


def test_lora_yaml_warns_that_lora_is_not_applied(caplog):
    from mindrlhf.configs.run_config import load_run_config

    path = os.path.join(REAL, "mindformers", "v1.3.0_lora_llama2_7b.yaml")
    with caplog.at_level(logging.WARNING, logger="mindrlhf.configs.run_config"):
        load_run_config(path)
    (line,) = [r.getMessage() for r in caplog.records if "pet_config" in r.getMessage()]
    assert path in line and "pet_type lora" in line and "NOT applied" in line
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mindrlhf.configs.run_config"):
        load_run_config(os.path.join(REAL, "mindformers", "v1.3.0_finetune_llama2_7b.yaml"))
    assert not [r for r in caplog.records if "pet_config" in r.getMessage()]


def test_model_name_in_checkpoint_name_or_path_is_a_clear_error():
    from mindrlhf.configs.run_config import load_run_config
    from mindrlhf.utils.checkpoint import CheckpointError, read_checkpoint

    run = load_run_config(os.path.join(REAL, "mindformers", "v1.0.0_run_llama2_7b.yaml"))
    assert run.model_config.checkpoint_name_or_path == "llama2_7b"
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(run.checkpoint_path)
    msg = str(err.value)
    assert "'llama2_7b' is a MindFormers model name" in msg and "not a file" in msg
    assert "python -m mindrlhf.tools.convert_hf" in msg and ".ckpt" in msg
    run = load_run_config(os.path.join(REAL, "mindformers", "v1.3.0_finetune_llama2_7b.yaml"))
    with pytest.raises(CheckpointError, match=r"'\{path\}' is the placeholder"):
        read_checkpoint(run.checkpoint_path)


@pytest.mark.parametrize("path", RANK_TABLES, ids=os.path.basename)
def test_every_rank_table_validates(path):
    from mindrlhf.parallel.rank_table import load_rank_table

    table = load_rank_table(path)
    assert table.rank_size in (4, 8, 16)
    assert [d.rank_id for d in table.devices] == list(range(table.rank_size))
    per_server = table.rank_size // len(table.server_ids)
    for start in range(0, table.rank_size, per_server):  # each server's launcher
        local = table.local_devices(start, per_server)
        assert len({d.server_id for d in local}) == 1


def test_placeholder_rank_table_is_refused_by_name():
    from mindrlhf.parallel.rank_table import RankTableError, load_rank_table

    with pytest.raises(
        RankTableError, match=r"server_list\[1\]\.server_id: server 'xx\.xx\.xx\.xx' is listed twice"
    ):
        load_rank_table(os.path.join(REAL, "ranktable", PLACEHOLDER_TABLE))


def test_rank_start_given_as_a_device_id_gets_the_right_advice():
    """The original launcher took RANK_START as a device offset: devices 4-7 -> RANK_START 4. Here it is 0."""
    from mindrlhf.parallel.rank_table import RankTableError, load_rank_table

    table = load_rank_table(os.path.join(REAL, "ranktable", "hccl_4p_4567_127.0.0.1.json"))
    assert [d.device_id for d in table.local_devices(0, 4)] == [4, 5, 6, 7]
    with pytest.raises(RankTableError) as err:
        table.local_devices(4, 4)
    msg = str(err.value)
    assert "not a device id" in msg and "pass RANK_START 0 and LOCAL_DEVICE_NUM 4" in msg
    assert "lower LOCAL_DEVICE_NUM" not in msg
    table8 = load_rank_table(os.path.join(REAL, "ranktable", "hccl_8p_01234567_127.0.0.1.json"))
    with pytest.raises(
        RankTableError, match="lower LOCAL_DEVICE_NUM to 4"
    ):  # a real overrun keeps its advice
        table8.local_devices(4, 8)


@pytest.mark.parametrize("name", ["one.jsonl", "cvalues_readme_example.jsonl"])
@pytest.mark.parametrize("mode", ["ppo", "rm", "sft"])
def test_cvalues_lines_convert_with_the_data_tool(tmp_path_factory, name, mode):
    from mindrlhf.data.convert import convert_jsonl
    from mindrlhf.data.reader import read_dataset
    from mindrlhf.data.tokenizer import train_sentencepiece

    src = os.path.join(REAL, "mindrlhf", name)
    lines = [json.loads(line) for line in open(src, encoding="utf-8") if line.strip()]
    sentences = [r[k] for r in lines for k in ("prompt", "pos_resp", "neg_resp")]
    tok = train_sentencepiece(tmp_path_factory.mktemp("tok") / "t", 2000, sentences=sentences * 3)
    out = str(tmp_path_factory.mktemp("out") / f"{mode}.mindrecord")
    summary = convert_jsonl(src, out, tok, kind=mode, max_prompt_length=256, seq_length=1024)
    assert summary.rows == len(lines) and not summary.skipped
    data = read_dataset(out, mode, batch_size=1, shuffle=False).read_all()
    assert all(len(col) == len(lines) for col in data.values())


@pytest.mark.parametrize("name", ["llama2_7b_hf_config.eLLM.json", "llama2_7b_hf_config.HPMLL.json"])
def test_meta_config_json_spellings_parse(name):
    from mindrlhf.tools.convert_hf import config_from_hf

    path = os.path.join(REAL, "hf", name)
    with open(path, encoding="utf-8") as f:
        config = config_from_hf(json.load(f), path)
    assert (config.hidden_size, config.num_heads, config.num_kv_heads) == (4096, 32, 32)
    assert config.ffn_hidden_size == 11008 and config.vocab_size == 32000 and config.theta == 10000.0
    assert config.num_layers in (3, 32)  # the eLLM copy cut it to 3 layers (SOURCES.md)


def test_meta_weight_names_map_to_mindformers_names():
    from mindrlhf.configs.run_config import load_run_config
    from mindrlhf.models.llama import llama_param_shapes
    from mindrlhf.tools.convert_hf import hf_to_ms_name, ms_to_hf_name

    with open(os.path.join(REAL, "hf", "llama2_7b_hf_weight_names.txt"), encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    mapped = {n: hf_to_ms_name(n) for n in names}
    assert sum(v is None for v in mapped.values()) == 32  # the rotary_emb.inv_freq buffers
    kept = {v for v in mapped.values() if v is not None}
    config = load_run_config(os.path.join(REAL, "mindrlhf", "llama2_7b.yaml")).model_config
    assert kept == set(llama_param_shapes(config))
    assert all(ms_to_hf_name(mapped[n]) == n for n in names if mapped[n] is not None)
