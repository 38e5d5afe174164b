"""The one data-parallel context every trainer uses: world size, rank, and statistics over all ranks.

MindSpore's auto-parallel context says whether this process is one of N data-parallel ranks (set by the entry
point with `set_parallel_context` after `init_distributed`). Each rank trains on its own shard of the global batch;
TrainStep averages the gradients. What must see the *global* batch goes through this module:
- host statistics (PPO whitening, score normalisation, the adaptive KL controller, logged means): `DataParallel`
  sums and gathers numpy arrays across ranks, in float64 and in rank order, so every rank gets bit-identical
  results;
- token means inside a loss: `GlobalMean` turns a per-rank masked mean into the mean over every rank's tokens,
  so that N ranks train exactly like one process on the global batch even when ranks hold different numbers of
  tokens.
With one process both are the identity (no communication op is built).
"""

from __future__ import annotations

from typing import Optional, Tuple

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

_DATA_PARALLEL_MODES = (ms.ParallelMode.DATA_PARALLEL, ms.ParallelMode.HYBRID_PARALLEL)


def world_and_rank() -> Tuple[int, int]:
    """(N, rank) when the auto-parallel context is data/hybrid parallel over N ranks, else (1, 0)."""
    if ms.get_auto_parallel_context("parallel_mode") not in _DATA_PARALLEL_MODES:
        return 1, 0
    from mindspore.communication import get_group_size, get_rank

    return int(get_group_size()), int(get_rank())


class DataParallel:
    """Host-side reductions over the data-parallel ranks (identity for one process).

    `sum` and `gather` communicate through one float32 AllGather: a float64 value travels as two float32 words
    (hi + lo, ~48 significant bits) and the sum over ranks is taken locally in float64, in rank order, so it is
    the same on every rank and does not lose the digits a float32 AllReduce would.
    """

    def __init__(self, world: Optional[int] = None, rank: Optional[int] = None):
        if world is None:
            world, rank = world_and_rank()
        self.world, self.rank = int(world), int(rank or 0)
        self._gather = ops.AllGather() if self.world > 1 else None

    def gather(self, values: np.ndarray) -> np.ndarray:
        """`values [k, ...]` of every rank concatenated in rank order -> `[world * k, ...]` float64."""
        values = np.asarray(values, np.float64)
        if self.world == 1:
            return values
        hi = values.astype(np.float32)
        lo = (values - hi.astype(np.float64)).astype(np.float32)
        both = self._gather(Tensor(np.stack([hi, lo]).reshape(1, 2, *values.shape))).asnumpy()
        both = both.astype(np.float64)  # [world, 2, ...]
        return (
            (both[:, 0] + both[:, 1]).reshape(-1, *values.shape[1:])
            if values.ndim
            else both[:, 0] + both[:, 1]
        )

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Elementwise sum over ranks of `values` (any shape), float64."""
        values = np.asarray(values, np.float64)
        if self.world == 1:
            return values
        return self.gather(values[None]).sum(0)

    def mean(self, values: np.ndarray) -> np.ndarray:
        """Elementwise mean over ranks, float64."""
        return self.sum(values) / self.world

    def whiten(self, x: np.ndarray, mask: np.ndarray, eps: float = 1e-8) -> np.ndarray:
        """`ppo_math.masked_whiten` (mean and unbiased variance over masked-in tokens) over every rank's tokens.

        Two passes in float64: the global mean first, then the sum of squared deviations from it, so a mean large
        against the std loses no digits (the one-pass `sum x^2 - n mean^2` in float32 was off by 3e-2 at
        mean/std = 1000). x, mask: `[B, T]` of this rank -> `[B, T]` float64, zero outside the mask.
        """
        from mindrlhf.algorithms import ppo_math

        if self.world == 1:
            return ppo_math.masked_whiten(x, mask, eps=eps)
        x64, m64 = np.asarray(x, np.float64), np.asarray(mask, np.float64)
        total, count = self.sum(np.array([(x64 * m64).sum(), m64.sum()]))
        mean = total / max(count, 1.0)
        squares = self.sum(np.array([(np.square(x64 - mean) * m64).sum()]))[0]
        var = squares / max(count - 1.0, 1.0)
        return (x64 - mean) / np.sqrt(var + eps) * m64


class GlobalMean(nn.Cell):
    """In-graph: a per-rank masked mean over `count` tokens -> the mean over every rank's tokens.

        global = AllReduce(mean * count) / max(AllReduce(count), 1)
    AllReduce's gradient is an AllReduce of the upstream gradient (N on every rank), so rank r's gradient is
    N * d(own sum) / total, and TrainStep's mean over ranks gives d(global sum) / total: one process's gradient on
    the global batch. A plain per-rank mean would weight each rank's tokens by 1 / (N * its own count).
    Identity (no communication) for one process.
    """

    def __init__(self, world: int = 1):
        super().__init__(auto_prefix=False)
        self.active = world > 1
        if self.active:
            self.all_reduce = ops.AllReduce()

    def construct(self, mean, count):
        if not self.active:
            return mean
        total = ops.stop_gradient(self.all_reduce(count))
        return self.all_reduce(mean * count) / ops.maximum(total, ops.ones_like(total))


class GlobalSum(nn.Cell):
    """In-graph: a per-rank count -> the sum over ranks (no gradient); identity for one process."""

    def __init__(self, world: int = 1):
        super().__init__(auto_prefix=False)
        self.active = world > 1
        if self.active:
            self.all_reduce = ops.AllReduce()

    def construct(self, count):
        if not self.active:
            return count
        return ops.stop_gradient(self.all_reduce(count))
