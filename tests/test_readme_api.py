"""The README's "Python API" code block runs as printed: only its file paths are replaced, by files this test builds.

It takes a manual `train_step` and then `train()`, i.e. one PPO iteration's optimiser steps more than the
learning-rate schedule plans; that used to crash in `train()` ("Gather ... range [0, 40), but got 40").
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from test_data_parallel import _env

from mindrlhf.configs.run_config import write_run_yaml
from mindrlhf.data.convert import layout_rows
from mindrlhf.data.schemas import get_schema
from mindrlhf.data.writer import AtomicMindRecordWriter
from mindrlhf.models.llama.config import LlamaConfig
from mindrlhf.models.llama.model import LlamaForCausalLM
from mindrlhf.models.roles import ValueModel
from mindrlhf.utils.checkpoint import save_checkpoint
from mindrlhf.utils.metrics import read_metrics

V = 64
SMALL = LlamaConfig(
    seq_length=64, hidden_size=32, num_layers=1, num_heads=4, n_kv_heads=2, vocab_size=V, multiple_of=16
)


def readme_python_api() -> str:
    """The first ```python block after the README's '## Python API' heading, verbatim."""
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _ppo_mindrecord(path, max_prompt_length, seq_length, rows=24):
    """A PPO MindRecord of `rows` random prompts (distinct) and answers, tokens in [4, V)."""
    rng = np.random.RandomState(0)
    longest = min(20, max_prompt_length - 1)
    prompts = [list(rng.randint(4, V, rng.randint(3, longest))) for _ in range(rows)]
    answers = [list(rng.randint(4, V, rng.randint(3, longest))) for _ in range(rows)]
    cols, reasons = layout_rows(
        "ppo", prompts, answers, None, bos_id=1, eos_id=2, pad_id=0, max_prompt_length=max_prompt_length,
        seq_length=seq_length,
    )  # fmt: skip
    assert not any(reasons)
    meta = {"max_prompt_length": max_prompt_length, "seq_length": seq_length}
    with AtomicMindRecordWriter(str(path), get_schema("ppo"), meta) as w:
        w.write([{k: c[i] for k, c in cols.items()} for i in range(len(prompts))])
        w.commit()


@pytest.mark.slow
def test_readme_python_api_example_runs_as_printed(tmp_path):
    code = readme_python_api()
    from mindrlhf.configs.ppo_config import PPOConfig

    ppo_yaml = os.path.join(ROOT, "model_configs", "ppo_config.yaml")
    ppo = PPOConfig.from_yaml(ppo_yaml)
    sft_ckpt = save_checkpoint(LlamaForCausalLM(SMALL), str(tmp_path / "sft.ckpt"))
    rm_ckpt = save_checkpoint(ValueModel(SMALL), str(tmp_path / "rm.ckpt"))
    _ppo_mindrecord(tmp_path / "ppo.mindrecord", ppo.max_prompt_length, ppo.seq_length)
    paths = {
        "model_configs/llama2_config/llama2_tiny.yaml": os.path.join(ROOT, "model_configs", "llama2_config",
                                                                      "llama2_tiny.yaml"),
        "out/tiny.ckpt": str(tmp_path / "out" / "tiny.ckpt"),
        "model_configs/ppo_config.yaml": ppo_yaml,
        "sft.yaml": write_run_yaml(SMALL, str(tmp_path / "sft.yaml"), checkpoint=sft_ckpt),
        "rm.yaml": write_run_yaml(SMALL, str(tmp_path / "rm.yaml"), checkpoint=rm_ckpt),
        "ppo.mindrecord": str(tmp_path / "ppo.mindrecord"),
        "out/ppo": str(tmp_path / "out" / "ppo"),
    }  # fmt: skip
    for old, new in paths.items():
        assert f'"{old}"' in code, f"the README example no longer names {old!r}: update this test's paths"
        code = code.replace(f'"{old}"', repr(new))
    os.makedirs(tmp_path / "out", exist_ok=True)
    script = tmp_path / "readme_api.py"
    script.write_text(code + "\nprint('README_OK', trainer.iteration, metrics['ppo/loss/actor'])\n")
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "README_OK 10 " in proc.stdout
    rows = read_metrics(str(tmp_path / "out" / "ppo" / "metrics.jsonl"))
    assert [r["step"] for r in rows] == list(range(10))
    # 44 optimiser steps on a 40-step schedule: the last steps hold the schedule's final learning rate.
    final_lr = ppo.actor_lr * ppo.min_lr_ratio
    assert rows[-1]["ppo/lr/actor"] == pytest.approx(final_lr, rel=1e-6)
    assert all(np.isfinite(r["ppo/loss/actor"]) for r in rows)
