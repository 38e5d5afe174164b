"""The one way to write a file (or a directory) that is read later: all of it, or nothing, even after a crash.

Every writer follows the same four steps: write under a hidden temporary name in the target's own folder (a
rename is only atomic within one filesystem), flush and fsync the data, rename over the target, fsync the
folder so the rename itself survives a power cut. A reader therefore sees the old content or the new content,
never a truncated mix, and an exception while writing leaves the target untouched and no temporary behind.

    with atomic_write("run.yaml") as f:                  # text; atomic_write(path, binary=True) for bytes
        yaml.safe_dump(data, f)

    tmp = temp_path_beside("model.ckpt")                 # for libraries that write to a path themselves
    ms.save_checkpoint(params, tmp); commit_file(tmp, "model.ckpt")

    with atomic_dir("checkpoints/step_000012") as tmp:   # a folder of files, swapped in as one
        ...write files into tmp...
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import IO, Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create 0600/0700; a file written here should get the permissions `open()` would give it.
_UMASK = _umask()
FILE_MODE = 0o666 & ~_UMASK
DIR_MODE = 0o777 & ~_UMASK


def fsync_dir(directory: str) -> None:
    """Make a rename/creation inside `directory` durable (POSIX: fsync the folder itself)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: str) -> None:
    """Flush a file someone else wrote (and closed) to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def temp_prefix(name: str) -> str:
    """`.<name>.pid<PID>.`: temporaries name their writer, so a later run can remove a dead writer's leftovers
    (`mindrlhf.utils.run_state.remove_stale_temporaries`) and never a live one's."""
    return f".{name}.pid{os.getpid()}."


def _parent(path: str) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    return directory


def temp_path_beside(path: str, suffix: str = "") -> str:
    """A fresh hidden path in `path`'s folder (created empty) for a writer that only accepts a path.

    `suffix` keeps the extension a library insists on (MindSpore appends `.ckpt` when a name lacks it).
    Pass the result to `commit_file`, or delete it on failure.
    """
    fd, tmp = tempfile.mkstemp(
        prefix=temp_prefix(os.path.basename(path)), suffix=f".tmp{suffix}", dir=_parent(path)
    )
    os.close(fd)
    return tmp


def commit_file(tmp: str, path: str) -> str:
    """Finish an atomic write whose data is already in `tmp` (same folder): fsync it, rename, fsync the folder."""
    os.chmod(tmp, FILE_MODE)
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))
    return path


@contextlib.contextmanager
def atomic_write(path: str, binary: bool = False, encoding: str = "utf-8") -> Iterator[IO]:
    """Yield a file object whose content replaces `path` when the block ends without an exception.

    On an exception the temporary file is removed, `path` keeps its old content (or stays absent) and the
    exception propagates. Parent folders are created.
    """
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(os.path.basename(path)), suffix=".tmp", dir=_parent(path))
    try:
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(os.path.abspath(path)))
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """Yield a hidden temporary folder beside `path`; when the block ends, it replaces `path` as a whole.

    Every file in it is fsynced before the swap. An existing `path` is first renamed aside and deleted only
    after the new folder is in place (a rename cannot replace a non-empty folder), so a crash in between
    leaves the old folder under a hidden `.<name>.old-*` name, never a half-written one under `path`. On an
    exception inside the block the temporary folder is deleted and `path` is untouched.
    """
    parent = _parent(path)
    name = os.path.basename(os.path.abspath(path))
    tmp = tempfile.mkdtemp(prefix=temp_prefix(name), suffix=".tmp", dir=parent)
    try:
        yield tmp
        for root, _, files in os.walk(tmp):
            for file in files:
                fsync_file(os.path.join(root, file))
            fsync_dir(root)
        os.chmod(tmp, DIR_MODE)
        old = None
        if os.path.lexists(path):
            old = tempfile.mkdtemp(prefix=temp_prefix(name), suffix=".old", dir=parent)
            os.replace(path, os.path.join(old, name))
        try:
            os.replace(tmp, path)
        except BaseException:
            if old is not None:
                os.replace(os.path.join(old, name), path)
            raise
        fsync_dir(parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
