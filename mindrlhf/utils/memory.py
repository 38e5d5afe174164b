"""Give the heap that MindSpore's graph compiles and phase buffers freed back to the operating system.

glibc keeps freed memory in its arenas; after a compile (the first PPO iteration compiles ~10 graphs) much of it is
garbage that RSS still counts. `malloc_trim(0)` returns it. Measured with bench/bench_ppo.py (tiny preset, one
run): steady-state RSS 1714 -> 1557 MB when trimmed after each phase, with no measurable cost per iteration
(docs/benchmarks.md, "PPO memory").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:  # not glibc (musl, macOS): nothing to trim
        return None


def release_freed_heap() -> bool:
    """Return freed heap pages to the OS (glibc `malloc_trim(0)`); False where the C library has no such call."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
