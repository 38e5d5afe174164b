"""Parallel layout of a run YAML: loading, validation messages, launch-environment reading, shard arithmetic."""

import itertools
import json
import os
import subprocess
import sys

import pytest

from mindrlhf.configs.loader import ConfigError
from mindrlhf.parallel.config import ParallelConfig, load_parallel_config
from mindrlhf.parallel.rank_table import RankTableError, build_rank_table
from mindrlhf.parallel.runtime import DistributedEnvError, read_distributed_env, set_parallel_context
from mindrlhf.parallel.shard import check_layout, llama_layout, llama_layout_from_config, llama_op_shapes

# The MindFormers llama2_7b.yaml sections (8 NPUs, semi-auto parallel).
YAML_7B = """
use_parallel: True
parallel:
  parallel_mode: 1 # 0-data parallel, 1-semi-auto parallel, 2-auto parallel, 3-hybrid parallel
  gradients_mean: False
  full_batch: True
  search_mode: "sharding_propagation"
  enable_parallel_optimizer: True
  strategy_ckpt_save_file: "./ckpt_strategy.ckpt"
parallel_config:
  data_parallel: 2
  model_parallel: 4
  pipeline_stage: 1
  use_seq_parallel: False
  micro_batch_num: 1
  vocab_emb_dp: True
  gradient_aggregation_group: 4
model:
  model_config:
    num_heads: 32
    num_layers: 32
"""
DIMS_7B = dict(num_heads=32, n_kv_heads=None, num_layers=32, batch_size=8, vocab_size=32000)


def make(dp=1, mp=1, pp=1, mode=1, micro=1, vocab_emb_dp=True, use_parallel=True, source="run.yaml"):
    raw = {
        "use_parallel": use_parallel,
        "parallel": {"parallel_mode": mode},
        "parallel_config": {
            "data_parallel": dp,
            "model_parallel": mp,
            "pipeline_stage": pp,
            "micro_batch_num": micro,
            "vocab_emb_dp": vocab_emb_dp,
        },
    }
    return ParallelConfig.from_run_dict(raw, source)


def validation_error(config, world, **dims):
    with pytest.raises(ConfigError) as info:
        config.validate(world, **{**DIMS_7B, **dims})
    return str(info.value)


def test_loads_mindformers_sections(tmp_path):
    path = tmp_path / "llama2_7b.yaml"
    path.write_text(YAML_7B)
    pc = load_parallel_config(str(path))
    assert pc.use_parallel is True and pc.source == str(path)
    assert pc.mode == "semi_auto_parallel"  # MindFormers' number 1
    assert (pc.dp, pc.mp, pc.pp) == (2, 4, 1)
    assert pc.parallel.full_batch is True and pc.parallel.gradients_mean is False
    assert pc.parallel.enable_parallel_optimizer is True and pc.parallel_config.vocab_emb_dp is True
    pc.validate(8, **DIMS_7B)  # fits 8 devices


def test_absent_sections_mean_one_plain_process():
    pc = ParallelConfig.from_run_dict({"model": {}}, "x.yaml")
    assert pc.use_parallel is False and pc.mode == "data_parallel" and (pc.dp, pc.mp, pc.pp) == (1, 1, 1)
    pc.validate(1, **DIMS_7B)


@pytest.mark.parametrize(
    "text, field, words",
    [
        ("parallel_config:\n  data_parallel: two\n", "parallel_config.data_parallel", "expected an integer"),
        (
            "parallel_config:\n  model_parallel: 0\n",
            "parallel_config.model_parallel",
            "must be an integer >= 1",
        ),
        ("parallel:\n  parallel_mode: 7\n", "parallel.parallel_mode", "unknown mode 7"),
        ("parallel:\n  parallel_mode: fully_auto\n", "parallel.parallel_mode", "unknown mode 'fully_auto'"),
        ("use_parallel: maybe\n", "use_parallel", "expected true/false"),
    ],
)
def test_bad_yaml_values_name_file_and_field(tmp_path, text, field, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_parallel_config(str(path))
    msg = str(info.value)
    assert msg.startswith(f"{path}: field '{field}'") and words in msg


def test_mode_names_are_accepted():
    assert make(mode="SEMI_AUTO_PARALLEL").mode == "semi_auto_parallel"
    assert make(mode=0).mode == "data_parallel"


def test_product_must_equal_world_size():
    msg = validation_error(make(dp=2, mp=4), 4)
    assert msg.startswith("run.yaml: field 'parallel_config'")
    assert "data_parallel (2) * model_parallel (4) * pipeline_stage (1) = 8, but 4 process(es)" in msg


def test_heads_and_kv_heads_divisible_by_model_parallel():
    msg = validation_error(make(dp=1, mp=8), 8, num_heads=12)
    assert "field 'parallel_config.model_parallel'" in msg and "does not divide num_heads=12" in msg
    msg = validation_error(make(dp=1, mp=4), 4, num_heads=32, n_kv_heads=2)
    assert "does not divide n_kv_heads=2" in msg


def test_layers_divisible_by_pipeline_stage_and_micro_batches():
    msg = validation_error(make(dp=1, pp=3, micro=3), 3, num_layers=32, batch_size=3)
    assert "field 'parallel_config.pipeline_stage': 3 does not divide num_layers=32" in msg
    msg = validation_error(make(dp=1, pp=4, micro=2), 4, batch_size=4)
    assert "field 'parallel_config.micro_batch_num': 2 < pipeline_stage=4" in msg
    make(dp=2, pp=4, micro=4).validate(8, **{**DIMS_7B, "batch_size": 8})


def test_batch_divisible_by_data_parallel():
    msg = validation_error(make(dp=8, mode=0), 8, batch_size=12)
    assert "field 'parallel_config.data_parallel': 8 does not divide the batch size 12" in msg


def test_vocab_split_only_when_not_vocab_emb_dp():
    make(dp=1, mp=8, vocab_emb_dp=True).validate(8, **{**DIMS_7B, "vocab_size": 32001})
    msg = validation_error(make(dp=1, mp=8, vocab_emb_dp=False), 8, vocab_size=32001)
    assert "field 'parallel_config.vocab_emb_dp'" in msg and "vocab_size=32001" in msg


def test_data_parallel_mode_cannot_split_the_model():
    msg = validation_error(make(dp=1, mp=2, mode=0), 2)
    assert "field 'parallel.parallel_mode': is data_parallel" in msg and "semi_auto_parallel" in msg


def test_use_parallel_false_allows_one_process_only():
    make(dp=8, use_parallel=False).validate(1, **DIMS_7B)  # split sizes ignored, as MindFormers does
    msg = validation_error(make(use_parallel=False), 2)
    assert "field 'use_parallel': is false but 2 processes were launched" in msg


def test_several_problems_come_in_one_message():
    msg = validation_error(make(dp=3, mp=8), 8, num_heads=12, batch_size=8)
    assert msg.startswith("run.yaml: 3 problems with the parallel layout: (1) field 'parallel_config'")
    assert (
        "(2) field 'parallel_config.model_parallel'" in msg
        and "(3) field 'parallel_config.data_parallel'" in msg
    )


def test_dataset_shard():
    assert make(dp=2, mode=0).dataset_shard(1, 2) == (2, 1)  # data parallel: each rank reads its slice
    assert make(dp=2, mode=1).dataset_shard(1, 2) == (2, 1)  # semi-auto without full_batch
    full = ParallelConfig.from_run_dict(
        {"use_parallel": True, "parallel": {"parallel_mode": 1, "full_batch": True}}
    )
    assert full.dataset_shard(1, 2) is None
    assert make().dataset_shard(0, 1) is None


# ---- launch environment -----------------------------------------------------------------------------------------


def test_single_process_environment():
    info = read_distributed_env("cpu", {})
    assert (info.launcher, info.rank, info.world_size, info.device_target, info.backend) == (
        "single",
        0,
        1,
        "CPU",
        None,
    )
    assert read_distributed_env("Ascend", {"DEVICE_ID": "3", "RANK_SIZE": "1"}).device_id == 3


def test_msrun_environment():
    env = {"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "2", "RANK_ID": "1", "DEVICE_ID": "1", "RANK_SIZE": "2"}
    info = read_distributed_env("CPU", env)
    assert (info.launcher, info.rank, info.world_size, info.backend) == ("msrun", 1, 2, "mccl")
    assert read_distributed_env("GPU", env).backend == "nccl"
    with pytest.raises(DistributedEnvError, match="MS_WORKER_NUM"):
        read_distributed_env("CPU", {"MS_ROLE": "MS_WORKER"})


def write_table(tmp_path, n=4, device_ids=None):
    path = tmp_path / "hccl.json"
    ips = [f"192.168.1.{i + 1}" for i in range(n)]
    path.write_text(json.dumps(build_rank_table(ips, "127.0.0.1", device_ids)))
    return str(path)


def test_rank_table_environment(tmp_path):
    table = write_table(tmp_path, 4, device_ids=[4, 5, 6, 7])
    env = {"RANK_SIZE": "4", "RANK_ID": "2", "DEVICE_ID": "6", "RANK_TABLE_FILE": table}
    info = read_distributed_env("Ascend", env)
    assert (info.launcher, info.rank, info.world_size, info.device_id, info.backend) == (
        "rank_table",
        2,
        4,
        6,
        "hccl",
    )
    with pytest.raises(
        DistributedEnvError, match="puts rank 2 on device_id 6 but DEVICE_ID=2; set DEVICE_ID=6"
    ):
        read_distributed_env("Ascend", {**env, "DEVICE_ID": "2"})
    with pytest.raises(DistributedEnvError, match="RANK_SIZE=8 but .* lists 4 device"):
        read_distributed_env("Ascend", {**env, "RANK_SIZE": "8"})
    with pytest.raises(DistributedEnvError, match="RANK_ID in 0..3"):
        read_distributed_env("Ascend", {**env, "RANK_ID": "4"})
    with pytest.raises(DistributedEnvError, match="needs RANK_TABLE_FILE"):
        read_distributed_env("Ascend", {k: v for k, v in env.items() if k != "RANK_TABLE_FILE"})
    with pytest.raises(RankTableError, match="file not found"):
        read_distributed_env("Ascend", {**env, "RANK_TABLE_FILE": str(tmp_path / "missing.json")})


def test_rank_table_launch_is_refused_off_ascend(tmp_path):
    env = {"RANK_SIZE": "2", "RANK_ID": "0", "DEVICE_ID": "0", "RANK_TABLE_FILE": write_table(tmp_path, 2)}
    with pytest.raises(
        DistributedEnvError, match=r"on CPU: rank tables \(HCCL\) are for Ascend.*scripts/run_msrun_train.sh"
    ):
        read_distributed_env("CPU", env)


def test_bad_environment_values():
    with pytest.raises(DistributedEnvError, match="RANK_SIZE='eight' is not an integer"):
        read_distributed_env("Ascend", {"RANK_SIZE": "eight"})
    with pytest.raises(ConfigError, match="unknown device target 'TPU'"):
        read_distributed_env("TPU", {})


# ---- MindSpore auto-parallel context ------------------------------------------------------------------------------


@pytest.fixture()
def ms_context():
    ms = pytest.importorskip("mindspore")
    yield ms
    ms.reset_auto_parallel_context()


def test_set_parallel_context(ms_context):
    ms = ms_context
    kwargs = set_parallel_context(make(dp=2, mode=0), 2, "CPU")
    assert kwargs == {"parallel_mode": "data_parallel", "gradients_mean": True, "device_num": 2}
    assert ms.get_auto_parallel_context("parallel_mode") == "data_parallel"
    assert ms.get_auto_parallel_context("device_num") == 2 and ms.get_auto_parallel_context("gradients_mean")
    semi = ParallelConfig.from_run_dict(
        {
            "use_parallel": True,
            "parallel": {"parallel_mode": 1, "full_batch": True},
            "parallel_config": {"pipeline_stage": 2},
        }
    )
    kwargs = set_parallel_context(semi, 8, "Ascend")
    assert kwargs["parallel_mode"] == "semi_auto_parallel" and kwargs["pipeline_stages"] == 2
    assert ms.get_auto_parallel_context("pipeline_stages") == 2 and ms.get_auto_parallel_context("full_batch")
    assert set_parallel_context(make(dp=2), 1, "CPU") == {"parallel_mode": "stand_alone"}
    assert ms.get_auto_parallel_context("parallel_mode") == "stand_alone"


def test_semi_auto_parallel_is_refused_on_cpu(ms_context):
    with pytest.raises(ConfigError) as info:
        set_parallel_context(make(dp=1, mp=2, mode=1), 2, "CPU")
    msg = str(info.value)
    assert (
        msg.startswith("run.yaml: field 'parallel.parallel_mode'")
        and "parallel_mode: 0 (data_parallel)" in msg
    )


# ---- shard strategies ------------------------------------------------------------------------------------------


def shapes_7b(batch=8, seq=4096, vocab=32000, nkv=None, heads=32, ffn=11008):
    return llama_op_shapes(batch, seq, 4096, heads, nkv, ffn, vocab)


def test_strategies_by_hand_dp2_mp4():
    layout = llama_layout(2, 4, 1, vocab_emb_dp=False, num_layers=32)
    ops = layout.ops
    assert ops["model.layers.*.attention.wq.matmul"].strategy == ((2, 1), (4, 1))  # column parallel
    assert ops["model.layers.*.feed_forward.w3.matmul"].strategy == ((2, 1), (4, 1))
    assert ops["model.layers.*.attention.wo.matmul"].strategy == ((2, 4), (1, 4))  # row parallel
    assert ops["model.layers.*.feed_forward.w2.matmul"].strategy == ((2, 4), (1, 4))
    assert ops["model.layers.*.attention.bmm_t"].strategy == ((2, 4, 1, 1), (2, 4, 1, 1))
    assert ops["model.tok_embeddings.gather"].strategy == ((4, 1), (2, 1))  # vocab parallel
    assert ops["lm_head.matmul"].strategy == ((2, 1), (4, 1))
    replicated = llama_layout(2, 4, 1, vocab_emb_dp=True, num_layers=32).ops
    assert replicated["model.tok_embeddings.gather"].strategy == ((1, 1), (2, 1))
    assert replicated["lm_head.matmul"].strategy == ((2, 1), (1, 1))
    assert check_layout(layout, shapes_7b()) == []


def test_pipeline_stages_of_layers():
    layout = llama_layout_from_config(make(dp=1, pp=4, micro=4), num_layers=32)
    assert layout.layer_stages == (0,) * 8 + (1,) * 8 + (2,) * 8 + (3,) * 8
    assert (layout.embedding_stage, layout.head_stage) == (0, 3)
    with pytest.raises(ValueError, match="does not divide num_layers=32"):
        llama_layout(1, 1, 3, True, 32)


def test_check_layout_finds_indivisible_dims():
    problems = check_layout(llama_layout(1, 3, 1, False, 32), shapes_7b(vocab=32000))
    joined = "\n".join(problems)
    assert "wq.matmul input 1 (weight [nh*hd, H]): dim 0 of size 4096 is split 3 ways" in joined
    assert (
        "tok_embeddings.gather input 0 (embedding_weight [V, H]): dim 0 of size 32000 is split 3 ways"
        in joined
    )
    assert "bmm_t input 0" in joined


def test_validate_agrees_with_the_layout_arithmetic():
    """For every split of a small grid, `validate` passes exactly when each sharded dimension divides evenly."""
    checked = 0
    for dp, mp, emb_dp, vocab, nkv, batch in itertools.product(
        (1, 2, 3), (1, 2, 3, 4, 8), (True, False), (32000, 32001), (8, 2), (6, 8)
    ):
        pc = make(dp=dp, mp=mp, mode=1, vocab_emb_dp=emb_dp)
        dims = dict(
            num_heads=8, n_kv_heads=nkv, num_layers=4, batch_size=batch, vocab_size=vocab, ffn_hidden_size=96
        )
        shapes = llama_op_shapes(batch, 16, 64, 8, nkv, 96, vocab)
        try:
            pc.validate(dp * mp, **dims)
            valid = True
        except ConfigError:
            valid = False
        fits = check_layout(llama_layout(dp, mp, 1, emb_dp, 4), shapes) == []
        assert valid == fits, (dp, mp, emb_dp, vocab, nkv, batch)
        checked += valid
    assert 0 < checked < 240  # both outcomes occur


def test_init_distributed_single_process_in_a_fresh_interpreter():
    """No launcher variables: no communication init, rank 0 of 1, the device is set (own process: set_device is
    once per process)."""
    code = (
        "import mindspore as ms; from mindrlhf.parallel import init_distributed; i = init_distributed('cpu');"
        "print(i.launcher, i.rank, i.world_size, i.backend, ms.get_context('device_target'))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RANK_", "MS_", "DEVICE_ID"))}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["single", "0", "1", "None", "CPU"]
