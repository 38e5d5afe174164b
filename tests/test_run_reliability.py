"""Saves that survive faults (issue 15): stale temporaries, checksums, a full disk, the schedule on resume,
`--resume` checked before anything starts, torn metrics lines."""

import errno
import json
import logging
import os
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest

from mindrlhf.models.llama import LlamaConfig, LlamaForCausalLM
from mindrlhf.models.llama.model import llama_param_shapes
from mindrlhf.trainer.train_step import lr_schedule, make_optimizer
from mindrlhf.utils import checkpoint as ckpt_mod
from mindrlhf.utils.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from mindrlhf.utils.metrics import read_metrics, repair_metrics
from mindrlhf.utils.resume import resume_problems
from mindrlhf.utils.run_state import load_run_state, save_run_state

SMALL = dict(seq_length=16, hidden_size=32, num_layers=1, num_heads=4, vocab_size=50, intermediate_size=40)
STATE = {
    "train_step": {"loss_scale": 1.0, "good_steps": 0},
    "config": {"learning_rate": 1e-3, "batch_size": 4},
}


def _model(seed=0, **overrides):
    ms.set_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**SMALL, **overrides}))


def _optimizer(model, lr=1e-3, steps=10):
    return make_optimizer(model.trainable_params(), lr_schedule(lr, steps, 0, "cosine", 0.1), 0.0)


def _save(save_dir, step, model=None, optimizer=None, state=STATE):
    model = model or _model()
    optimizer = optimizer or _optimizer(model)
    return save_run_state(str(save_dir), step, {"model": model}, {"model": optimizer}, dict(state))


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------------------------------------- 1. temporaries
def test_a_save_removes_a_dead_writers_temporaries_and_keeps_a_live_ones(tmp_path, caplog):
    root = tmp_path / "checkpoints"
    dead = root / f".step_000004.pid{_dead_pid()}.ab12cd34.tmp"
    live_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = root / f".step_000004.pid{live_proc.pid}.ef56gh78.tmp"
        for folder in (dead, live):
            folder.mkdir(parents=True)
            (folder / "actor.ckpt").write_bytes(b"x" * 1000)
        dead_latest = root / f".latest.pid{_dead_pid()}.zz99yy88.tmp"
        dead_latest.write_text("step_000004\n")
        with caplog.at_level(logging.WARNING, logger="mindrlhf.utils.run_state"):
            _save(tmp_path, 2)
        assert not dead.exists() and not dead_latest.exists()
        assert live.exists() and (live / "actor.ckpt").exists()  # a live process's work is never touched
        removed = [r.getMessage() for r in caplog.records if "which no longer runs" in r.getMessage()]
        assert len(removed) == 2 and str(dead) in " ".join(removed)
    finally:
        live_proc.kill()
        live_proc.wait()
    # The temporaries this process writes name it (so a later run can tell them apart).
    assert sorted(os.listdir(root)) == [live.name, "latest", "step_000002"]


# ---------------------------------------------------------------------------------------------- 4. checksums
def _flip_tensor_bytes(path, name, params):
    """Change 4 bytes inside the data of tensor `name` (located by its bytes in the file)."""
    data = bytearray(open(path, "rb").read())
    raw = params[name].asnumpy().tobytes()
    at = data.find(raw)
    assert at > 0, "tensor bytes not found in the file"
    mid = at + len(raw) // 2
    data[mid : mid + 4] = bytes(b ^ 0xFF for b in data[mid : mid + 4])
    open(path, "wb").write(bytes(data))


def test_changed_bytes_inside_a_tensor_are_caught_with_the_file_named(tmp_path):
    path = str(tmp_path / "model.ckpt")
    model = _model()
    save_checkpoint(model, path)
    assert open(path + ".sha256").read().split() == [ckpt_mod.write_checksum.__globals__["sha256_file"](path),
                                                     "model.ckpt"]  # fmt: skip
    params = read_checkpoint(path)
    _flip_tensor_bytes(path, "model.layers.0.attention.wq.weight", params)
    # MindSpore itself reads the damaged file without complaint: only the checksum can tell.
    changed = ms.load_checkpoint(path)["model.layers.0.attention.wq.weight"].asnumpy()
    assert not np.array_equal(changed, params["model.layers.0.attention.wq.weight"].asnumpy())
    with pytest.raises(CheckpointError, match=r"model\.ckpt: checksum mismatch"):
        read_checkpoint(path)


def test_a_foreign_checkpoint_without_a_sidecar_still_loads(tmp_path, caplog):
    path = str(tmp_path / "mindformers.ckpt")
    ms.save_checkpoint(_model(), path)  # as MindFormers writes it: no sidecar
    with caplog.at_level(logging.DEBUG, logger="mindrlhf.utils.integrity"):
        params = read_checkpoint(path)
    assert "model.norm_out.weight" in params
    assert any("without a checksum check" in r.getMessage() for r in caplog.records)


def test_overwriting_a_checkpoint_updates_its_sidecar(tmp_path):
    path = str(tmp_path / "model.ckpt")
    save_checkpoint(_model(0), path)
    first = open(path + ".sha256").read()
    save_checkpoint(_model(1), path)
    assert open(path + ".sha256").read() != first
    read_checkpoint(path)  # matches


# ---------------------------------------------------------------------------------------------- 8. disk full
def test_disk_full_during_a_save_names_the_file_and_the_last_good_step(tmp_path, monkeypatch):
    model = _model()
    _save(tmp_path, 1, model)
    real = ms.save_checkpoint
    calls = []

    def full_on_the_optimizer(save_obj, ckpt_file_name, *args, **kwargs):
        calls.append(ckpt_file_name)
        if len(calls) == 2:  # the model file went through; the optimizer file hits the full disk
            raise OSError(errno.ENOSPC, "No space left on device", ckpt_file_name)
        return real(save_obj, ckpt_file_name, *args, **kwargs)

    monkeypatch.setattr(ckpt_mod.ms, "save_checkpoint", full_on_the_optimizer)
    with pytest.raises(CheckpointError) as err:
        _save(tmp_path, 2, model)
    message = str(err.value)
    target = os.path.join(str(tmp_path), "checkpoints", "step_000002", "model_optimizer.ckpt")
    assert message.startswith(f"disk full while writing {target}; the last good checkpoint is step 1")
    root = tmp_path / "checkpoints"
    assert sorted(os.listdir(root)) == ["latest", "step_000001"]  # no temporary left behind
    assert (root / "latest").read_text().strip() == "step_000001"
    state = load_run_state(str(tmp_path), {"model": _model(3)}, {"model": _optimizer(_model(3))})
    assert state["step"] == 1  # the previous step is intact (and its checksums hold)


# ---------------------------------------------------------------------------------------------- 5. schedule
def test_resume_rebuilds_the_schedule_from_the_new_config_and_keeps_the_step_counter(tmp_path):
    model = _model()
    optimizer = _optimizer(model, lr=1e-3, steps=10)
    ms.ops.assign(optimizer.global_step, ms.Tensor([3], ms.int32))
    _save(tmp_path, 3, model, optimizer)
    # A longer run with another peak lr: the table has another length and other values.
    new_optimizer = _optimizer(_model(5), lr=1e-4, steps=20)
    load_run_state(str(tmp_path), {"model": _model(5)}, {"model": new_optimizer})
    table = optimizer_table = new_optimizer.learning_rate.learning_rate.asnumpy()
    np.testing.assert_allclose(table, lr_schedule(1e-4, 20, 0, "cosine", 0.1), rtol=0)
    assert optimizer_table.shape == (20,)
    assert int(new_optimizer.global_step.asnumpy()[0]) == 3


# ---------------------------------------------------------------------------------------------- 3. --resume
def _expected(**overrides):
    return {"model": llama_param_shapes(LlamaConfig(**{**SMALL, **overrides}))}


def _problems(save_dir, config=None, **overrides):
    problems, _ = resume_problems(str(save_dir), _expected(**overrides), ("model",), ("train_step",), "sft",
                                  config)  # fmt: skip
    return problems


def test_a_good_run_directory_has_no_problems(tmp_path):
    _save(tmp_path, 2)
    problems, state = resume_problems(str(tmp_path), _expected(), ("model",), ("train_step",))
    assert (
        problems == []
        and state["step"] == 2
        and state["files"] == {"models": ["model"], "optimizers": ["model"]}
    )


def test_every_damaged_part_of_a_run_directory_is_listed_at_once(tmp_path):
    _save(tmp_path, 2)
    step = tmp_path / "checkpoints" / "step_000002"
    params = read_checkpoint(str(step / "model.ckpt"))
    _flip_tensor_bytes(str(step / "model.ckpt"), "lm_head.weight", params)
    data = open(step / "model_optimizer.ckpt", "rb").read()
    open(step / "model_optimizer.ckpt", "wb").write(data[: len(data) // 2])  # cut short
    problems = _problems(tmp_path, {"learning_rate": 2e-3, "batch_size": 8})
    text = "\n".join(problems)
    assert len(problems) == 3, text
    assert f"{step / 'model.ckpt'}: checksum mismatch" in text
    assert f"{step / 'model_optimizer.ckpt'}: checksum mismatch" in text
    # lr may change; batch_size may not, and the message names the field and the saved value
    assert "field 'batch_size' is 8 but the run in" in text and "saved with batch_size=4" in text
    assert "field 'learning_rate'" not in text


def test_missing_files_cut_state_and_a_dangling_latest_are_problems(tmp_path):
    _save(tmp_path, 2)
    step = tmp_path / "checkpoints" / "step_000002"
    os.remove(step / "model_optimizer.ckpt")
    text = "\n".join(_problems(tmp_path))
    assert f"{step / 'model_optimizer.ckpt'}: missing" in text
    # state.json cut (a sidecar-less file from an older version: parsed, and the cut is reported)
    data = open(step / "state.json").read()
    open(step / "state.json", "w").write(data[: len(data) // 2])
    os.remove(step / "state.json.sha256")
    assert any("state.json: not valid JSON" in p for p in _problems(tmp_path))
    (tmp_path / "checkpoints" / "latest").write_text("step_000009\n")
    assert _problems(tmp_path) == [
        f"{tmp_path / 'checkpoints' / 'latest'}: names 'step_000009', which is not a folder in "
        f"{tmp_path / 'checkpoints'} (deleted?); the step folders there are step_000002: write the newest "
        f"complete one into {tmp_path / 'checkpoints' / 'latest'}"
    ]


def test_shapes_are_checked_against_the_config(tmp_path):
    _save(tmp_path, 2)
    problems = _problems(tmp_path, hidden_size=64)
    assert any("model.ckpt: checkpoint does not match the model" in p for p in problems), problems
    assert any("model_optimizer.ckpt: optimizer state does not fit the model" in p for p in problems), (
        problems
    )


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": 0.5}\n{"step": 2, "lo')
    with caplog.at_level(logging.WARNING, logger="mindrlhf.utils.metrics"):
        assert repair_metrics(str(path)) is None
    assert [m["step"] for m in read_metrics(str(path))] == [0, 1]
    assert any("dropped a torn last line 3" in r.getMessage() for r in caplog.records)
    path.write_text('{"step": 0}\n{"ste\n{"step": 2}\n')
    assert "line 2 is not JSON" in repair_metrics(str(path))
    assert json.loads(path.read_text().splitlines()[2]) == {"step": 2}  # not "repaired" away


def test_a_resumed_metrics_writer_survives_a_torn_last_line(tmp_path):
    from mindrlhf.utils.metrics import MetricsWriter

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "loss": 1.0}\n{"step": 1, "loss": 0.5}\n{"step": 2, "lo')
    writer = MetricsWriter(str(path), resume_step=1)
    writer.write(2, {"loss": 0.25})
    writer.close()
    assert [(m["step"], m["loss"]) for m in read_metrics(str(path))] == [(0, 1.0), (1, 0.5), (2, 0.25)]
