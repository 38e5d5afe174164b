"""SHA-256 sidecars for the checkpoint files mindrlhf writes: `actor.ckpt` -> `actor.ckpt.sha256`.

A checkpoint read back with the wrong bytes (a flipped bit on disk, a copy cut short, an edit) would otherwise
load and train silently: MindSpore's `.ckpt` reader only notices damage to its protobuf framing, not to the
tensor data inside it. Every checkpoint `mindrlhf.utils.checkpoint.save_checkpoint` writes gets a sidecar,
as the MindRecord datasets do; `read_checkpoint` checks it before loading and names the file when it differs.
A checkpoint without a sidecar (MindFormers, converted Hugging Face weights, files written before this) loads
as before, with a debug line saying it was not verified.

The sidecar holds `<hex digest>  <file name>` (the `sha256sum` format: `sha256sum -c actor.ckpt.sha256` works
in the checkpoint's folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os

from mindrlhf.errors import MindRLHFError
from mindrlhf.utils.io import atomic_write

logger = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".sha256"
_CHUNK = 1 << 20


class ChecksumError(MindRLHFError):
    """A file whose bytes differ from the SHA-256 recorded when it was written (or whose sidecar is unreadable)."""


def sidecar_path(path: str) -> str:
    return path + SIDECAR_SUFFIX


def sha256_file(path: str) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def remove_checksum(path: str) -> None:
    """Delete `path`'s sidecar (before `path` is replaced, so a crash never pairs a new file with an old sum)."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(sidecar_path(path))


def write_checksum(path: str) -> str:
    """Write `path.sha256` (atomically) for the file as it is now; returns the digest."""
    digest = sha256_file(path)
    with atomic_write(sidecar_path(path)) as f:
        f.write(f"{digest}  {os.path.basename(path)}\n")
    return digest


def verify_checksum(path: str) -> bool:
    """True when `path` matches its sidecar, False when it has none (logged at debug level).

    Raises ChecksumError naming the file when the digest differs or the sidecar cannot be parsed.
    """
    side = sidecar_path(path)
    if not os.path.isfile(side):
        logger.debug(
            "%s: no %s sidecar (not written by mindrlhf): loaded without a checksum check", path, side
        )
        return False
    with open(side, encoding="utf-8", errors="replace") as f:
        fields = f.read().split()
    if not fields or len(fields[0]) != 64 or any(ch not in "0123456789abcdef" for ch in fields[0]):
        raise ChecksumError(f"{side}: not a SHA-256 sidecar (expected '<64 hex digits>  <file name>')")
    actual = sha256_file(path)
    if actual != fields[0]:
        raise ChecksumError(
            f"{path}: checksum mismatch (sha256 {actual[:16]}..., {os.path.basename(side)} records "
            f"{fields[0][:16]}...): the file changed after it was written (disk or copy damage, an edit); "
            "restore it from a good copy or resume from an earlier step"
        )
    return True
