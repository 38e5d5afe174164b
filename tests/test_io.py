"""mindrlhf.utils.io: a target is either its old or its new content, no temporary is left, and data is fsynced."""

import json
import os

import numpy as np
import pytest

from mindrlhf.utils import io


class Boom(Exception):
    pass


@pytest.fixture
def fsyncs(monkeypatch):
    """Count os.fsync calls (still performed) as (fd is a directory, fd is a file) pairs."""
    calls = []
    real = os.fsync

    def counting(fd):
        calls.append("dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "file")
        return real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_atomic_write_text_and_binary_replace_the_target(tmp_path, fsyncs):
    path = tmp_path / "sub" / "a.json"  # the parent folder is created
    with io.atomic_write(str(path)) as f:
        json.dump({"x": 1}, f)
    assert json.loads(path.read_text()) == {"x": 1}
    assert fsyncs == ["file", "dir"]
    with io.atomic_write(str(path), binary=True) as f:
        f.write(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert os.listdir(path.parent) == ["a.json"]
    assert oct(path.stat().st_mode & 0o777) == oct(io.FILE_MODE)  # not mkstemp's 0600


@pytest.mark.parametrize("existed", [True, False])
def test_atomic_write_exception_mid_write_leaves_old_content_and_no_temp(tmp_path, fsyncs, existed):
    path = tmp_path / "run.yaml"
    if existed:
        path.write_text("old\n")
    with pytest.raises(Boom):
        with io.atomic_write(str(path)) as f:
            f.write("new half")
            f.flush()
            raise Boom
    assert os.listdir(tmp_path) == (["run.yaml"] if existed else [])
    if existed:
        assert path.read_text() == "old\n"
    assert fsyncs == []  # nothing was published


def test_failed_rename_removes_the_temp(tmp_path, monkeypatch):
    path = tmp_path / "t.bin"
    path.write_bytes(b"old")

    def failing_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk gone"):
        with io.atomic_write(str(path), binary=True) as f:
            f.write(b"new")
    assert os.listdir(tmp_path) == ["t.bin"] and path.read_bytes() == b"old"


def test_commit_file_fsyncs_and_renames(tmp_path, fsyncs):
    path = tmp_path / "model.ckpt"
    tmp = io.temp_path_beside(str(path), suffix=".ckpt")
    assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith(".ckpt") and os.path.basename(tmp)[0] == "."
    with open(tmp, "wb") as f:  # a library writing to the path it was given
        f.write(b"weights")
    io.commit_file(tmp, str(path))
    assert path.read_bytes() == b"weights" and os.listdir(tmp_path) == ["model.ckpt"]
    assert fsyncs == ["file", "dir"]


def test_atomic_dir_replaces_a_folder_as_a_whole(tmp_path, fsyncs):
    final = tmp_path / "step_000001"
    final.mkdir()
    (final / "old.ckpt").write_text("old")
    with io.atomic_dir(str(final)) as tmp:
        assert os.path.dirname(tmp) == str(tmp_path) and not os.path.samefile(tmp, final)
        with open(os.path.join(tmp, "a.ckpt"), "w") as f:
            f.write("a")
        os.mkdir(os.path.join(tmp, "sub"))
        with open(os.path.join(tmp, "sub", "b.json"), "w") as f:
            f.write("b")
        assert (final / "old.ckpt").read_text() == "old"  # still the old folder while writing
    assert sorted(os.listdir(final)) == ["a.ckpt", "sub"] and (final / "sub" / "b.json").read_text() == "b"
    assert os.listdir(tmp_path) == ["step_000001"]  # neither the temporary nor the old folder remain
    assert fsyncs.count("file") == 2 and fsyncs.count("dir") == 3  # 2 files; tmp, tmp/sub, the parent


def test_atomic_dir_exception_keeps_the_old_folder(tmp_path):
    final = tmp_path / "hf"
    final.mkdir()
    (final / "config.json").write_text("{}")
    with pytest.raises(Boom):
        with io.atomic_dir(str(final)) as tmp:
            with open(os.path.join(tmp, "config.json"), "w") as f:
                f.write('{"half":')
            raise Boom
    assert os.listdir(tmp_path) == ["hf"] and (final / "config.json").read_text() == "{}"


def test_save_checkpoint_goes_through_the_helper(tmp_path, fsyncs, monkeypatch):
    from mindrlhf.utils import checkpoint as ck

    path = tmp_path / "w.ckpt"
    ck.save_checkpoint({"a": np.ones((2, 3), np.float32)}, str(path))
    assert sorted(os.listdir(tmp_path)) == ["w.ckpt", "w.ckpt.sha256"]
    assert fsyncs[:2] == ["file", "dir"]  # the checkpoint, then its folder (then the sidecar's writes)
    np.testing.assert_array_equal(ck.read_checkpoint(str(path))["a"].asnumpy(), np.ones((2, 3), np.float32))

    def crash(*args, **kwargs):
        raise Boom

    monkeypatch.setattr(ck.ms, "save_checkpoint", crash)
    with pytest.raises(Boom):
        ck.save_checkpoint({"a": np.zeros((2, 3), np.float32)}, str(path))
    assert sorted(os.listdir(tmp_path)) == ["w.ckpt", "w.ckpt.sha256"]
    np.testing.assert_array_equal(ck.read_checkpoint(str(path))["a"].asnumpy(), np.ones((2, 3), np.float32))


def test_no_hand_written_temp_then_rename_left_in_the_library():
    """Every writer uses mindrlhf.utils.io; the only other os.replace is the MindRecord triple swap."""
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "mindrlhf")
    offenders = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not name.endswith(".py") or path.endswith(os.path.join("utils", "io.py")):
                continue
            text = open(path, encoding="utf-8").read()
            if "os.replace(" in text or "mkstemp(" in text or "os.rename(" in text:
                offenders.append(os.path.relpath(path, root))
    assert offenders == [os.path.join("data", "writer.py")]
