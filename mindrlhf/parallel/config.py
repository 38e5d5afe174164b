"""Parallel layout of a MindFormers run YAML, its validation, distributed init and the auto-parallel context.

Order of use in an entry point (the device must be chosen before communication starts)::

    info = init_distributed(device_target)                  # rank, world size; sets the device
    pc = load_parallel_config(sft_yaml)                     # `use_parallel`, `parallel`, `parallel_config`
    pc.validate(info.world_size, num_heads=..., n_kv_heads=..., num_layers=..., batch_size=..., vocab_size=...)
    set_parallel_context(pc, info.world_size)               # mindspore.set_auto_parallel_context(...)

Under msrun the scheduler process runs the same script: `init_distributed` never returns there (MindSpore
exits it when the job ends), so call it before any side effect such as creating the output directory.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from mindrlhf.configs.loader import ConfigError, dataclass_from_dict, get_section, load_yaml
from mindrlhf.errors import MindRLHFError

logger = logging.getLogger(__name__)

STAND_ALONE = "stand_alone"
DATA_PARALLEL = "data_parallel"
SEMI_AUTO_PARALLEL = "semi_auto_parallel"
AUTO_PARALLEL = "auto_parallel"
HYBRID_PARALLEL = "hybrid_parallel"
# MindFormers YAMLs write the mode as a number: "0-data parallel, 1-semi-auto parallel, 2-auto parallel, 3-hybrid".
_MODE_BY_NUMBER = {0: DATA_PARALLEL, 1: SEMI_AUTO_PARALLEL, 2: AUTO_PARALLEL, 3: HYBRID_PARALLEL}
_SHARDING_MODES = (SEMI_AUTO_PARALLEL, AUTO_PARALLEL, HYBRID_PARALLEL)  # need shard()/strategies: not on CPU

DEVICE_TARGETS = {"cpu": "CPU", "gpu": "GPU", "ascend": "Ascend", "npu": "Ascend"}
BACKENDS = {"Ascend": "hccl", "GPU": "nccl", "CPU": "mccl"}


@dataclasses.dataclass
class ParallelContextConfig:
    """The YAML's `parallel` section: what goes to `mindspore.set_auto_parallel_context`."""

    parallel_mode: Union[int, str] = DATA_PARALLEL  # 0/1/2/3 or the MindSpore name; normalised to the name
    gradients_mean: bool = True  # average (not sum) gradients over data-parallel ranks
    full_batch: bool = False  # semi/auto only: every rank reads the whole global batch and slices it
    enable_parallel_optimizer: bool = False  # semi/auto only: shard optimizer states over data-parallel ranks

    def __post_init__(self):
        mode = self.parallel_mode
        if isinstance(mode, int):
            if mode not in _MODE_BY_NUMBER:
                raise ConfigError(
                    f"unknown mode {mode}; use 0 (data_parallel), 1 (semi_auto_parallel), 2 (auto_parallel) "
                    "or 3 (hybrid_parallel)",
                    field="parallel_mode",
                )
            mode = _MODE_BY_NUMBER[mode]
        mode = str(mode).strip().lower()
        known = (STAND_ALONE, *_MODE_BY_NUMBER.values())
        if mode not in known:
            raise ConfigError(
                f"unknown mode {self.parallel_mode!r}; use one of {', '.join(known)}", field="parallel_mode"
            )
        self.parallel_mode = mode


@dataclasses.dataclass
class ParallelDims:
    """The YAML's `parallel_config` section: how many ways each axis is split (MindFormers' field names)."""

    data_parallel: int = 1  # dp: batch split across replicas
    model_parallel: int = 1  # mp: heads / FFN width / vocab split across devices (tensor parallel)
    pipeline_stage: int = 1  # pp: layers split into consecutive stages
    micro_batch_num: int = 1  # micro-batches per step that fill the pipeline (>= pp)
    vocab_emb_dp: bool = (
        True  # True: embedding and lm_head replicated (dp only); False: split over vocab by mp
    )
    use_seq_parallel: bool = False
    gradient_aggregation_group: int = 4

    def __post_init__(self):
        for name in (
            "data_parallel",
            "model_parallel",
            "pipeline_stage",
            "micro_batch_num",
            "gradient_aggregation_group",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"must be an integer >= 1, got {getattr(self, name)}", field=name)


@dataclasses.dataclass
class ParallelConfig:
    """`use_parallel`, `parallel` and `parallel_config` of one MindFormers run YAML (`source` names it in errors)."""

    use_parallel: bool = False
    parallel: ParallelContextConfig = dataclasses.field(default_factory=ParallelContextConfig)
    parallel_config: ParallelDims = dataclasses.field(default_factory=ParallelDims)
    source: Optional[str] = None

    @property
    def dp(self) -> int:
        return self.parallel_config.data_parallel

    @property
    def mp(self) -> int:
        return self.parallel_config.model_parallel

    @property
    def pp(self) -> int:
        return self.parallel_config.pipeline_stage

    @property
    def mode(self) -> str:
        return self.parallel.parallel_mode

    @classmethod
    def from_run_dict(cls, raw: Mapping[str, Any], source: Optional[str] = None) -> ParallelConfig:
        """Build from a loaded run YAML (e.g. `RunConfig.raw`); absent sections take the defaults above."""
        data: Dict[str, Any] = {}
        for key in ("use_parallel", "parallel", "parallel_config"):
            value = get_section(dict(raw), key, source, required=False)
            if value is not None:
                data[key] = value
        config = dataclass_from_dict(cls, data, source=source, allow_unknown=True)
        config.source = source
        return config

    def validate(
        self,
        world_size: int,
        num_heads: int,
        n_kv_heads: Optional[int],
        num_layers: int,
        batch_size: int,
        vocab_size: int,
        ffn_hidden_size: Optional[int] = None,
    ) -> None:
        """Check the layout fits `world_size` processes and the model; raise one ConfigError listing every problem.

        `batch_size` is the global batch of one step (all ranks together); `n_kv_heads=None` means `num_heads`.
        With `use_parallel: false` only a single process is allowed and the split sizes are ignored.
        """
        problems: List[Tuple[str, str]] = []  # (field, message)
        if not self.use_parallel:
            if world_size != 1:
                problems.append(
                    (
                        "use_parallel",
                        f"is false but {world_size} processes were launched; set use_parallel: true",
                    )
                )
            self._raise(problems)
            return
        dims = self.parallel_config
        dp, mp, pp = self.dp, self.mp, self.pp
        if dp * mp * pp != world_size:
            problems.append(
                (
                    "parallel_config",
                    f"data_parallel ({dp}) * model_parallel ({mp}) * pipeline_stage ({pp}) = {dp * mp * pp}, but "
                    f"{world_size} process(es) were launched; make the product equal the number of devices",
                )
            )
        if self.mode in (DATA_PARALLEL, STAND_ALONE) and (mp > 1 or pp > 1):
            problems.append(
                (
                    "parallel.parallel_mode",
                    f"is {self.mode}, which cannot split the model (model_parallel={mp}, pipeline_stage={pp}); "
                    "use parallel_mode: 1 (semi_auto_parallel) or set both to 1",
                )
            )
        heads = [("num_heads", num_heads)]
        if n_kv_heads is not None and n_kv_heads != num_heads:
            heads.append(("n_kv_heads", n_kv_heads))
        for name, value in heads:
            if value % mp:
                problems.append(
                    (
                        "parallel_config.model_parallel",
                        f"{mp} does not divide {name}={value}; each device must hold whole attention heads",
                    )
                )
        if ffn_hidden_size is not None and ffn_hidden_size % mp:
            problems.append(
                ("parallel_config.model_parallel", f"{mp} does not divide the FFN width {ffn_hidden_size}")
            )
        if not dims.vocab_emb_dp and vocab_size % mp:
            problems.append(
                (
                    "parallel_config.vocab_emb_dp",
                    f"is false, so the vocabulary is split {mp} ways, but model_parallel={mp} does not divide "
                    f"vocab_size={vocab_size}; set vocab_emb_dp: true or pad the vocabulary",
                )
            )
        if num_layers % pp:
            problems.append(
                (
                    "parallel_config.pipeline_stage",
                    f"{pp} does not divide num_layers={num_layers}; each stage needs the same number of layers",
                )
            )
        if batch_size % dp:
            problems.append(
                ("parallel_config.data_parallel", f"{dp} does not divide the batch size {batch_size}")
            )
        if pp > 1:
            if dims.micro_batch_num < pp:
                problems.append(
                    (
                        "parallel_config.micro_batch_num",
                        f"{dims.micro_batch_num} < pipeline_stage={pp}: the pipeline would never be full; "
                        f"use at least {pp}",
                    )
                )
            elif batch_size % dp == 0 and (batch_size // dp) % dims.micro_batch_num:
                problems.append(
                    (
                        "parallel_config.micro_batch_num",
                        f"{dims.micro_batch_num} does not divide the per-replica batch {batch_size // dp} "
                        f"(batch {batch_size} / data_parallel {dp})",
                    )
                )
        self._raise(problems)
        if self.mode == DATA_PARALLEL and world_size > 1 and not self.parallel.gradients_mean:
            logger.warning(
                "%s: parallel.gradients_mean is false in data_parallel mode: gradients are summed over %d ranks "
                "(an effective learning rate %d times larger)",
                self.source,
                world_size,
                world_size,
            )

    def _raise(self, problems: List[Tuple[str, str]]) -> None:
        if len(problems) == 1:
            raise ConfigError(problems[0][1], self.source, problems[0][0])
        if problems:
            listed = "; ".join(f"({i}) field '{f}': {m}" for i, (f, m) in enumerate(problems, 1))
            raise ConfigError(f"{len(problems)} problems with the parallel layout: {listed}", self.source)

    def dataset_shard(self, rank: int, world_size: int) -> Optional[Tuple[int, int]]:
        """`(num_shards, shard_id)` when each rank must read its own slice of the data, None when every rank
        reads the full batch (single process, or semi/auto parallel with `full_batch: true`)."""
        if world_size == 1 or not self.use_parallel:
            return None
        if self.mode in _SHARDING_MODES and self.parallel.full_batch:
            return None
        return world_size, rank


def load_parallel_config(path: str) -> ParallelConfig:
    """Read `use_parallel`, `parallel` and `parallel_config` of the MindFormers run YAML at `path`."""
    return ParallelConfig.from_run_dict(load_yaml(path), source=path)


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
        if mode in _SHARDING_MODES and target == "CPU":
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
        if mode in _SHARDING_MODES:
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


# ----------------------------------------------------------------------------------------------------------------
# Distributed launch: which launcher started this process, and MindSpore's communication init.


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
