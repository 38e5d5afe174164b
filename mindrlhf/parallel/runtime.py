"""The runtime side of parallelism: which launcher started this process, MindSpore's communication init and its
auto-parallel context. MindSpore is imported only inside the functions that change it.

Order of use in an entry point (the device must be chosen before communication starts)::

    info = init_distributed(device_target)                  # rank, world size; sets the device
    pc = load_parallel_config(sft_yaml)                     # mindrlhf.parallel.config: the YAML side
    pc.validate(info.world_size, num_heads=..., n_kv_heads=..., num_layers=..., batch_size=..., vocab_size=...)
    set_parallel_context(pc, info.world_size)               # mindspore.set_auto_parallel_context(...)

Under msrun the scheduler process runs the same script: `init_distributed` never returns there (MindSpore
exits it when the job ends), so call it before any side effect such as creating the output directory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Dict, Mapping, Optional

from mindrlhf.configs.loader import ConfigError
from mindrlhf.errors import MindRLHFError
from mindrlhf.parallel.config import SHARDING_MODES, STAND_ALONE, ParallelConfig

logger = logging.getLogger(__name__)

DEVICE_TARGETS = {"cpu": "CPU", "gpu": "GPU", "ascend": "Ascend", "npu": "Ascend"}
BACKENDS = {"Ascend": "hccl", "GPU": "nccl", "CPU": "mccl"}


def normalize_device_target(device_target: str) -> str:
    """ "cpu" / "GPU" / "ascend" / "npu" -> MindSpore's "CPU" / "GPU" / "Ascend"."""
    target = DEVICE_TARGETS.get(str(device_target).strip().lower())
    if target is None:
        raise ConfigError(
            f"unknown device target {device_target!r}; use CPU, GPU or Ascend", field="device_target"
        )
    return target


def set_parallel_context(
    config: ParallelConfig, world_size: int, device_target: Optional[str] = None
) -> Dict[str, Any]:
    """Set MindSpore's auto-parallel context for `config` on `world_size` processes; return the arguments used.

    One process (or `use_parallel: false`) -> stand_alone. Semi/auto/hybrid parallel compile only with the
    Ascend/GPU builds (the CPU build fails with "Invalid backend: CPU"), so they are refused on CPU.
    `device_target` defaults to the one already set in MindSpore's context.
    """
    import mindspore as ms

    target = normalize_device_target(device_target or ms.get_context("device_target"))
    ms.reset_auto_parallel_context()
    if world_size == 1 or not config.use_parallel:
        kwargs: Dict[str, Any] = {"parallel_mode": STAND_ALONE}
    else:
        mode = config.mode
        if mode == STAND_ALONE:
            raise ConfigError(
                f"is stand_alone but {world_size} processes were launched; use 0 (data_parallel)",
                config.source,
                "parallel.parallel_mode",
            )
        if mode in SHARDING_MODES and target == "CPU":
            raise ConfigError(
                f'{mode} cannot be compiled by MindSpore\'s CPU build ("Invalid backend: CPU"); on CPU use '
                "parallel_mode: 0 (data_parallel) with model_parallel: 1 and pipeline_stage: 1",
                config.source,
                "parallel.parallel_mode",
            )
        kwargs = {
            "parallel_mode": mode,
            "gradients_mean": config.parallel.gradients_mean,
            "device_num": world_size,
        }
        if mode in SHARDING_MODES:
            kwargs.update(
                full_batch=config.parallel.full_batch,
                pipeline_stages=config.pp,
                enable_parallel_optimizer=config.parallel.enable_parallel_optimizer,
            )
        elif config.parallel.enable_parallel_optimizer:
            # MindSpore only warns and shards nothing useful in data_parallel mode; say so once, plainly.
            logger.warning(
                "%s: parallel.enable_parallel_optimizer is ignored in data_parallel mode (needs semi_auto_parallel)",
                config.source,
            )
    ms.set_auto_parallel_context(**kwargs)
    logger.info("auto-parallel context: %s", kwargs)
    return kwargs


class DistributedEnvError(MindRLHFError):
    """The launch environment (RANK_ID, RANK_SIZE, DEVICE_ID, RANK_TABLE_FILE, msrun's MS_*) is inconsistent."""


@dataclasses.dataclass(frozen=True)
class DistributedInfo:
    """How this process was launched. `launcher` is "single", "msrun" or "rank_table"."""

    launcher: str
    rank: int
    world_size: int
    device_target: str
    device_id: Optional[int] = None
    backend: Optional[str] = None  # hccl / nccl / mccl; None for a single process
    rank_table_file: Optional[str] = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(env: Mapping[str, str], name: str, minimum: int = 0) -> Optional[int]:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise DistributedEnvError(f"environment variable {name}={raw!r} is not an integer") from None
    if value < minimum:
        raise DistributedEnvError(f"environment variable {name}={raw!r} must be >= {minimum}")
    return value


def read_distributed_env(device_target: str, env: Optional[Mapping[str, str]] = None) -> DistributedInfo:
    """Work out the launch from the environment, without touching MindSpore.

    - msrun (or any MindSpore dynamic cluster): `MS_ROLE` is set; world size `MS_WORKER_NUM`.
    - rank table (scripts/run_distribute_train.sh, Ascend only): `RANK_SIZE` > 1 with `RANK_ID`, `DEVICE_ID`,
      `RANK_TABLE_FILE`; the table must list RANK_SIZE devices and put rank RANK_ID on device DEVICE_ID.
    - otherwise a single process (`DEVICE_ID` picks the device when set).
    """
    env = os.environ if env is None else env
    target = normalize_device_target(device_target)
    backend = BACKENDS[target]
    device_id = _env_int(env, "DEVICE_ID")
    if env.get("MS_ROLE"):
        world = _env_int(env, "MS_WORKER_NUM", minimum=1)
        if world is None:
            raise DistributedEnvError(
                "MS_ROLE is set but MS_WORKER_NUM is not; launch with msrun --worker_num N"
            )
        rank = _env_int(env, "RANK_ID")
        return DistributedInfo("msrun", -1 if rank is None else rank, world, target, None, backend)
    rank_size = _env_int(env, "RANK_SIZE", minimum=1)
    if rank_size is None or rank_size == 1:
        return DistributedInfo("single", 0, 1, target, device_id)
    if target != "Ascend":
        raise DistributedEnvError(
            f"RANK_SIZE={rank_size} without msrun on {target}: rank tables (HCCL) are for Ascend; on GPU/CPU launch "
            "with scripts/run_msrun_train.sh (msrun)"
        )
    rank = _env_int(env, "RANK_ID")
    if rank is None or rank >= rank_size:
        raise DistributedEnvError(
            f"RANK_SIZE={rank_size} needs RANK_ID in 0..{rank_size - 1}, got {env.get('RANK_ID')!r}"
        )
    if device_id is None:
        raise DistributedEnvError("RANK_SIZE > 1 needs DEVICE_ID (the local NPU of this rank)")
    table_file = env.get("RANK_TABLE_FILE")
    if not table_file:
        raise DistributedEnvError("RANK_SIZE > 1 on Ascend needs RANK_TABLE_FILE (the HCCL rank table JSON)")
    from mindrlhf.parallel.rank_table import load_rank_table

    table = load_rank_table(table_file)
    if table.rank_size != rank_size:
        raise DistributedEnvError(f"RANK_SIZE={rank_size} but {table_file} lists {table.rank_size} device(s)")
    listed = table.devices[rank].device_id
    if listed != device_id:
        raise DistributedEnvError(
            f"{table_file} puts rank {rank} on device_id {listed} but DEVICE_ID={device_id}; set DEVICE_ID={listed}"
        )
    return DistributedInfo("rank_table", rank, rank_size, target, device_id, backend, table_file)


def init_distributed(device_target: str, env: Optional[Mapping[str, str]] = None) -> DistributedInfo:
    """Set the device and, for a multi-process launch, start MindSpore's communication (hccl/nccl/mccl).

    Returns the final rank and world size. A single process only gets its device set. Under msrun the scheduler
    process does not return from `mindspore.communication.init()`; MindSpore ends it with the job.
    """
    import mindspore as ms

    info = read_distributed_env(device_target, env)
    ms.set_device(info.device_target, info.device_id)
    if info.launcher == "single":
        logger.info("single process on %s (device_id %s)", info.device_target, info.device_id)
        return info
    from mindspore.communication import get_group_size, get_rank, init

    try:
        init(info.backend)
    except RuntimeError:
        logger.error("communication init failed (launcher %s, backend %s)", info.launcher, info.backend)
        raise
    rank, world = get_rank(), get_group_size()
    if world != info.world_size:
        raise DistributedEnvError(
            f"{info.backend} reports {world} ranks but the launcher asked for {info.world_size}"
        )
    info = dataclasses.replace(info, rank=rank, world_size=world)
    logger.info(
        "rank %d of %d on %s (%s, launched by %s)",
        rank,
        world,
        info.device_target,
        info.backend,
        info.launcher,
    )
    return info
