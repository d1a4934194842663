"""Deterministic iteration-based batches: batch i is a pure function of (seed, i), so a resumed run sees
exactly the batches the uninterrupted run would have seen."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class IterationBatchSampler(Sampler[list[int]]):
    """Yields index batches for iterations ``start, start+1, ...``: epochs are seeded permutations,
    each process takes its own slice (rank::world) of every global batch."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        start: int = 0,
        rank: int = 0,
        world: int = 1,
        total: int | None = None,
    ) -> None:
        if n < batch_size * world:
            raise ValueError(f"dataset has {n} samples, fewer than one batch ({batch_size} x {world} processes)")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.rank, self.world, self.total = start, rank, world, total
        self.per_epoch = n // (batch_size * world)

    def _perm(self, epoch: int) -> torch.Tensor:
        """The epoch's permutation (kept for the epoch: drawing one per batch cost a randperm per step)."""
        cached = getattr(self, "_cached", None)
        if cached is None or cached[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._cached = cached = (epoch, torch.randperm(self.n, generator=g))
        return cached[1]

    def batch(self, it: int) -> list[int]:
        epoch, k = divmod(it, self.per_epoch)
        gb = self.batch_size * self.world
        idx = self._perm(epoch)[k * gb : (k + 1) * gb]
        return idx[self.rank :: self.world].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        it = self.start
        while self.total is None or it < self.total:
            yield self.batch(it)
            it += 1

    def __len__(self) -> int:
        return (self.total - self.start) if self.total is not None else 2**31


class ShardSampler(Sampler[int]):
    """Evaluation indices of process ``rank``: ``rank, rank + world, ...`` without padding, so every sample is
    counted once over all processes (``DistributedSampler`` pads the last round with repeated samples, which
    the summed meters would count twice)."""

    def __init__(self, n: int, rank: int, world: int) -> None:
        self.n, self.rank, self.world = n, rank, world

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))
