"""Parallel layout of a MindFormers run YAML (`use_parallel`, `parallel`, `parallel_config`) and its validation.

Pure configuration: no MindSpore, no environment. Starting processes and changing MindSpore's context from a
validated `ParallelConfig` is `mindrlhf.parallel.runtime`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from mindrlhf.configs.loader import ConfigError, dataclass_from_dict, get_section, load_yaml

logger = logging.getLogger(__name__)

STAND_ALONE = "stand_alone"
DATA_PARALLEL = "data_parallel"
SEMI_AUTO_PARALLEL = "semi_auto_parallel"
AUTO_PARALLEL = "auto_parallel"
HYBRID_PARALLEL = "hybrid_parallel"
# MindFormers YAMLs write the mode as a number: "0-data parallel, 1-semi-auto parallel, 2-auto parallel, 3-hybrid".
_MODE_BY_NUMBER = {0: DATA_PARALLEL, 1: SEMI_AUTO_PARALLEL, 2: AUTO_PARALLEL, 3: HYBRID_PARALLEL}
SHARDING_MODES = (SEMI_AUTO_PARALLEL, AUTO_PARALLEL, HYBRID_PARALLEL)  # need shard()/strategies: not on CPU


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
        if self.mode in SHARDING_MODES and self.parallel.full_batch:
            return None
        return world_size, rank


def load_parallel_config(path: str) -> ParallelConfig:
    """Read `use_parallel`, `parallel` and `parallel_config` of the MindFormers run YAML at `path`."""
    return ParallelConfig.from_run_dict(load_yaml(path), source=path)
