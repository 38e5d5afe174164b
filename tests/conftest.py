"""Shared fixtures: a random tiny GQA Llama in Hugging Face format, converted once per session."""

import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_YAML = os.path.join(ROOT, "model_configs", "llama2_config", "llama2_tiny.yaml")
LLAMA2_7B_YAML = os.path.join(ROOT, "model_configs", "llama2_config", "llama2_7b.yaml")

# A GQA model (4 query heads, 2 kv heads) with an FFN width (88) that is not a power of two.
HF_TINY = dict(
    vocab_size=101,
    hidden_size=64,
    intermediate_size=88,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-6,
    rope_theta=10000.0,
    bos_token_id=1,
    eos_token_id=2,
)


# The longest modules (minutes each, measured in CI) run first: with two xdist workers (scripts/run_tests.sh) a
# long module collected late would run alone at the end while the other worker idles.
LONGEST_FIRST = (
    "test_demo.py",
    "test_arithmetic_demo.py",
    "test_train_entry.py",
    "test_signals.py",
    "test_data_parallel.py",
    "test_dpo_trainer.py",
    "test_grpo_train_entry.py",
    "test_readme_api.py",
)


def pytest_collection_modifyitems(config, items):
    """Stable reorder: the modules of LONGEST_FIRST in that order, then every other test as collected."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(os.path.basename(str(item.fspath)), len(rank)))


def run_module(*args, check=True):
    """Run `python -m ...` in a subprocess from the repository root; returns the CompletedProcess."""
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def hf_tiny(tmp_path_factory):
    """(torch model, its directory) of a random tiny HF Llama saved with safetensors."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**HF_TINY)).eval()
    # Non-trivial norm weights so a mis-mapped norm cannot hide behind all-ones.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("hf") / "tiny"
    model.save_pretrained(str(path), safe_serialization=True)
    return model, str(path)


@pytest.fixture(scope="session")
def converted_tiny(hf_tiny, tmp_path_factory):
    """The tiny HF model converted by the real CLI: (ckpt path, yaml path)."""
    out = tmp_path_factory.mktemp("converted")
    ckpt, yaml_path = str(out / "tiny.ckpt"), str(out / "tiny.yaml")
    run_module(
        "-m", "mindrlhf.tools.convert_hf", "--hf-dir", hf_tiny[1], "--output", ckpt, "--yaml-out", yaml_path
    )
    return ckpt, yaml_path


@pytest.fixture
def rng():
    return np.random.RandomState(0)
