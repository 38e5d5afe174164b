"""Distributed training: rank tables, the parallel layout of a run YAML (config.py, pure), distributed init and
the auto-parallel context (runtime.py), shard strategies.

Names are imported lazily (as in `mindrlhf/__init__.py`) so that `python -m mindrlhf.parallel.rank_table` runs
without importing its own module twice; nothing here imports MindSpore until `init_distributed` or
`set_parallel_context` is called.
"""

import importlib

_EXPORTS = {
    "SHARDING_MODES": "mindrlhf.parallel.config",
    "ParallelConfig": "mindrlhf.parallel.config",
    "ParallelContextConfig": "mindrlhf.parallel.config",
    "ParallelDims": "mindrlhf.parallel.config",
    "load_parallel_config": "mindrlhf.parallel.config",
    "DistributedEnvError": "mindrlhf.parallel.runtime",
    "DistributedInfo": "mindrlhf.parallel.runtime",
    "init_distributed": "mindrlhf.parallel.runtime",
    "normalize_device_target": "mindrlhf.parallel.runtime",
    "read_distributed_env": "mindrlhf.parallel.runtime",
    "set_parallel_context": "mindrlhf.parallel.runtime",
    "RankTable": "mindrlhf.parallel.rank_table",
    "RankTableError": "mindrlhf.parallel.rank_table",
    "load_rank_table": "mindrlhf.parallel.rank_table",
    "write_rank_table": "mindrlhf.parallel.rank_table",
    "LlamaLayout": "mindrlhf.parallel.shard",
    "OpShard": "mindrlhf.parallel.shard",
    "check_layout": "mindrlhf.parallel.shard",
    "llama_layout": "mindrlhf.parallel.shard",
    "llama_layout_from_config": "mindrlhf.parallel.shard",
    "llama_op_shapes": "mindrlhf.parallel.shard",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mindrlhf.parallel' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
