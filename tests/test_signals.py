"""Ctrl-C / SIGTERM stop a run cleanly (issue 15 item 2): a checkpoint, a message naming --resume, exit 130/143.

Before: once a MindSpore graph had run, SIGINT ended the process with status 143 and no output (MindSpore's own
C-level handler re-sends it as SIGTERM), and nothing was saved.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import ROOT
from test_train_entry import OVERRIDES, inputs  # noqa: F401  (inputs: the module fixture)

from mindrlhf.utils.resume import resume_problems

PY = sys.executable


def _script(tmp_path, body):
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(body))
    return subprocess.run([PY, str(path)], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT}, timeout=300)  # fmt: skip


def test_sigint_after_a_graph_ran_reaches_our_handler_and_a_second_one_stops_at_once(tmp_path):
    proc = _script(
        tmp_path,
        """
        import os, signal, sys
        import mindspore as ms, numpy as np
        from mindspore import nn, Tensor
        from mindrlhf.utils import signals
        ms.set_context(mode=ms.GRAPH_MODE)
        class Twice(nn.Cell):
            def construct(self, x):
                return x * 2
        net = Twice()
        signals.install()
        net(Tensor(np.ones(3, np.float32)))  # MindSpore installs its own SIGINT handler here
        assert not signals.stop_requested()  # ... and this safe point puts ours back
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.stop_requested() and signals.exit_code() == 130, signals.exit_code()
        print("first handled", signals.received(), flush=True)
        net(Tensor(np.ones(3, np.float32)))
        signals.stop_requested()
        os.kill(os.getpid(), signal.SIGINT)  # the second signal: out at once
        print("not reached", flush=True)
        """,
    )
    # The second Ctrl-C may land while MindSpore's C handler holds SIGINT and come back as SIGTERM (module doc of
    # mindrlhf.utils.signals): either way the process leaves at once, with that signal's exit code.
    assert proc.returncode in (130, 143), proc.stderr[-3000:]
    assert "first handled SIGINT (Ctrl-C)" in proc.stdout and "not reached" not in proc.stdout
    name = "SIGINT (Ctrl-C)" if proc.returncode == 130 else "SIGTERM"
    assert f"{name} again: stopping now, without a checkpoint" in proc.stderr


def _start(inputs, save_dir, *extra):  # noqa: F811
    cmd = [
        PY, os.path.join(ROOT, "train.py"), "--sft_model_path", str(inputs / "sft.yaml"),
        "--reward_model_path", str(inputs / "rm.yaml"), "--dataset_dir", str(inputs / "ppo.mindrecord"),
        "--save_dir", str(save_dir), "--device_target", "CPU", *OVERRIDES, *extra,
    ]  # fmt: skip
    log = open(save_dir.parent / f"{save_dir.name}.stderr", "w+")
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, cwd=str(inputs)), log


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_mid_run_saves_and_says_how_to_resume(inputs, tmp_path, sig):  # noqa: F811
    save_dir = tmp_path / "out"
    # 8 iterations, no periodic save: the only checkpoint after the signal is the one the signal wrote.
    proc, log = _start(inputs, save_dir, "--num_iterations", "8", "--save_interval", "100")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        log.seek(0)
        if "PPO Batch: 1 | PPO Epoch: 0" in log.read():  # iteration 0 trained: every graph has run
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(sig)
    rc = proc.wait(timeout=300)
    log.seek(0)
    err = log.read()
    # A Ctrl-C that lands inside a MindSpore graph arrives as SIGTERM (see mindrlhf.utils.signals).
    assert rc == (143 if sig == signal.SIGTERM else rc) and rc in (130, 143), err[-3000:]
    assert f"continues the run: add --resume {save_dir}" in err, err[-3000:]
    latest = (save_dir / "checkpoints" / "latest").read_text().strip()
    step = int(latest[len("step_") :])
    assert 1 <= step < 8, latest
    assert f"after iteration {step} of 8" in err
    problems, state = resume_problems(str(save_dir), {}, ("actor", "critic"), ("kl_controller",))
    assert problems == [] and state["step"] == step  # (that resuming is exact: test_train_entry.py)


def test_sft_stops_at_the_next_step_with_a_checkpoint_when_a_signal_comes(tmp_path):
    """In process: the signal arrives while step 3's batch is read; the loop saves step 3 and returns early
    (no export), `stopped_by` says why, and the exit code would be 130 (or 143, see below)."""
    import numpy as np
    from test_sft_rm import TINY, T

    from mindrlhf.configs.train_config import SFTConfig
    from mindrlhf.models.llama.model import LlamaForCausalLM
    from mindrlhf.trainer.rm_trainer import ArrayBatches
    from mindrlhf.trainer.sft_trainer import SFTTrainer
    from mindrlhf.utils import signals

    rows = {k: np.ones((8, T), np.int32) for k in ("input_ids", "attention_mask", "loss_mask")}

    class SignalOnThirdBatch(ArrayBatches):
        def iter_epoch(self, epoch, start=0):
            for i, batch in enumerate(super().iter_epoch(epoch, start), start):
                if epoch == 0 and i == 2:
                    os.kill(os.getpid(), signal.SIGINT)
                yield batch

    trainer = SFTTrainer(SFTConfig(batch_size=2, epochs=3), LlamaForCausalLM(TINY), SignalOnThirdBatch(rows, 2),
                         str(tmp_path))  # fmt: skip
    signals.install()
    try:
        trainer.train()
    finally:
        signals.uninstall()
    # MindSpore's C-level handler may hold SIGINT when the signal lands and re-send it as SIGTERM (see the
    # module doc of mindrlhf.utils.signals): either way the stop is clean and the exit code names the signal.
    assert (trainer.stopped_by, signals.exit_code()) in (("SIGINT (Ctrl-C)", 130), ("SIGTERM", 143))
    assert trainer.step == 3 and trainer.total_steps == 12
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step_000003"
    assert not (tmp_path / "model.ckpt").exists()  # stopped early: not exported


def test_a_signal_from_an_earlier_run_does_not_stop_a_later_one():
    """After uninstall() the exit code of the stopped run stays readable, but a later trainer in the same process
    (a notebook, a test suite) running without the handlers is not stopped by it."""
    from mindrlhf.utils import signals

    signals.install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.stop_requested() and signals.exit_code() == 143
    finally:
        signals.uninstall()
    assert signals.exit_code() == 143 and not signals.stop_requested()
    signals.install()  # a new run starts clean
    try:
        assert not signals.stop_requested() and signals.exit_code() is None
    finally:
        signals.uninstall()
