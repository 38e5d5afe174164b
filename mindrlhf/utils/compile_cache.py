"""MindSpore's graph compile cache, keyed so that a cached graph is only ever reused by the run it was built for.

MindSpore 2.10 reads `MS_COMPILER_CACHE_ENABLE=1` and `MS_COMPILER_CACHE_PATH` at each graph compile
(`set_context(enable_compile_cache=...)` is deprecated in favour of them) and stores the N-th graph a process
compiles as `rank_<r>/graph_cache/compile_cache_<N>.mindir`. Measured on this build (docs/benchmarks.md, "Compile
cache"), its own check is not enough to reuse that safely:
  - it invalidates the cache only when the entry script or an imported file *outside* `sys.path` changes, so an
    edit of an installed (or PYTHONPATH) package such as mindrlhf is not seen;
  - a change of input shapes is not seen either: a graph cached for batch 16 ran, silently, on batch 32 input and
    returned batch-16 output;
  - graphs are matched by compile order: two graphs compiled in the other order swapped results.
So each cache lives in its own directory `<root>/<key>`, the key a hash of everything that decides the graphs and
their order: the MindSpore version, the source of every mindrlhf module, and the caller's configs (model YAMLs,
trainer config: shapes, lengths, and the hyper-parameters compiled in as graph constants), world size and rank.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Mapping, Optional

logger = logging.getLogger(__name__)

ENABLE_ENV = "MS_COMPILER_CACHE_ENABLE"
PATH_ENV = "MS_COMPILER_CACHE_PATH"
DEFAULT_ROOT = os.path.join("~", ".cache", "mindrlhf", "compile_cache")


def source_fingerprint(package: Optional[str] = None) -> str:
    """sha256 over every .py file under `package` (default: the mindrlhf package; relative path and bytes) and
    MindSpore's version."""
    import mindspore

    if package is None:
        import mindrlhf

        package = os.path.dirname(os.path.abspath(mindrlhf.__file__))
    digest = hashlib.sha256(f"mindspore {mindspore.__version__}".encode())
    for folder, dirs, files in os.walk(package):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                digest.update(os.path.relpath(path, package).encode())
                with open(path, "rb") as f:
                    digest.update(f.read())
    return digest.hexdigest()


def cache_key(key: Mapping[str, Any]) -> str:
    """16 hex digits naming the cache of a run: hash of `key` (JSON, sorted; non-JSON values by repr) and of the
    source fingerprint."""
    text = json.dumps(key, sort_keys=True, default=repr)
    return hashlib.sha256((source_fingerprint() + text).encode()).hexdigest()[:16]


def enable_compile_cache(root: str, key: Mapping[str, Any] = None) -> str:
    """Turn MindSpore's compile cache on for the graphs this process compiles from now on; returns the directory.

    `root`: the cache root (`~` expanded); `key`: what decides this run's graphs (see the module doc). A second
    process with the same key loads the graphs instead of compiling them; any other key gets a fresh directory.
    """
    path = os.path.join(os.path.abspath(os.path.expanduser(root)), cache_key(key or {}))
    os.makedirs(path, exist_ok=True)
    warm = any(os.scandir(path))
    os.environ[ENABLE_ENV] = "1"
    os.environ[PATH_ENV] = path
    logger.info("compile cache %s (%s)", path, "warm: compiled graphs are loaded" if warm else "cold")
    return path


def disable_compile_cache() -> None:
    """Graphs compiled from now on are neither saved nor loaded."""
    os.environ.pop(ENABLE_ENV, None)
    os.environ.pop(PATH_ENV, None)


def use_compile_cache(setting: Optional[str], key: Mapping[str, Any]) -> Optional[str]:
    """An entry point's `--compile_cache` value: 'off' (or empty) disables the cache, anything else is the root
    of `enable_compile_cache(setting, key)`. Returns the run's cache directory, or None."""
    if not setting or setting.strip().lower() in ("off", "none", "false", "0"):
        disable_compile_cache()
        return None
    return enable_compile_cache(setting, key)
