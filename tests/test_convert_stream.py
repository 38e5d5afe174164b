"""convert_hf streams: tensors are read lazily and the checkpoint is written one tensor at a time."""

import mindspore as ms
import numpy as np
import pytest
from conftest import HF_TINY

from mindrlhf.tools import convert_hf, weights_io


class _Array:
    """A stand-in lazy tensor that counts its loads."""

    def __init__(self, array):
        self.array, self.shape, self.loads = array, array.shape, 0

    def load(self):
        self.loads += 1
        return self.array


def _arrays():
    rng = np.random.RandomState(0)
    return {
        "model.layers.0.attention.wq.weight": rng.randn(24, 16).astype(np.float32),
        "model.norm_out.weight": rng.randn(16).astype(np.float32),
        "lm_head.weight": rng.randn(40, 16).astype(np.float32),
    }


def test_streamed_ckpt_is_byte_identical_to_mindspore_save_checkpoint(tmp_path):
    arrays = _arrays()
    lazy = {k: _Array(v) for k, v in arrays.items()}
    convert_hf.write_checkpoint_streaming(lazy, str(tmp_path / "ours.ckpt"), "float32")
    assert all(t.loads == 1 for t in lazy.values())
    ms.save_checkpoint(
        [{"name": k, "data": ms.Tensor(v)} for k, v in arrays.items()], str(tmp_path / "ms.ckpt")
    )
    assert (tmp_path / "ours.ckpt").read_bytes() == (tmp_path / "ms.ckpt").read_bytes()


def test_sliced_tensors_and_safetensors_output_load_in_mindspore(tmp_path, monkeypatch):
    arrays = _arrays()
    monkeypatch.setattr(weights_io, "_MS_SLICE_KB", 1)  # 24x16 float32 = 1.5 KB -> 2 entries, 40x16 -> 3
    convert_hf.write_checkpoint_streaming(
        {k: _Array(v) for k, v in arrays.items()}, str(tmp_path / "s.ckpt"), "float32"
    )
    convert_hf.write_checkpoint_streaming(
        {k: _Array(v) for k, v in arrays.items()}, str(tmp_path / "h.safetensors"), "float16"
    )
    back = ms.load_checkpoint(str(tmp_path / "s.ckpt"))
    half = ms.load_checkpoint(str(tmp_path / "h.safetensors"), format="safetensors")
    for name, array in arrays.items():
        np.testing.assert_array_equal(back[name].asnumpy(), array)
        assert half[name].dtype == ms.float16
        np.testing.assert_array_equal(half[name].asnumpy(), array.astype(np.float16))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.safetensors", "s.ckpt"]  # no temporaries left


def test_shapes_are_checked_from_the_headers_before_any_weight_is_read(hf_tiny, tmp_path, monkeypatch):
    import json
    import shutil

    _, src = hf_tiny
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["intermediate_size"] = HF_TINY["intermediate_size"] + 8
    (bad / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(convert_hf._LazyTensor, "load", lambda self: pytest.fail("read before the check"))
    with pytest.raises(
        convert_hf.ConversionError, match=r"feed_forward\.w1\.weight \[88, 64\] != \[96, 64\]"
    ):
        convert_hf.convert_hf_dir(str(bad), str(tmp_path / "out.ckpt"))
    assert not list(tmp_path.glob("*.ckpt")) and not list(tmp_path.glob(".out.ckpt*"))


def test_bench_convert_small_runs_and_both_paths_write_the_same_file():
    import json
    import os
    import subprocess
    import sys

    from conftest import ROOT

    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "bench_convert.py"), "--small"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["identical_files_float32"] and result["identical_files_float16"]
    for key in ("streamed_float32", "materialised_float32"):
        assert result[key]["peak_rss_mb"] >= result[key]["floor_rss_mb"] > 0
