"""Meters accumulate a metric over a whole split (confusion matrices, pooled sums), never per-batch means.

Every accumulator is a tensor of sums, exposed by :meth:`Meter.state`, so a distributed evaluation reduces
each with ``all_reduce(SUM)`` and every process computes the same result.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch


class Meter(ABC):
    """Accumulates ``update(pred, target)`` over a split; ``compute()`` returns ``{metric: value}``.

    ``directions`` says, for every score ``compute()`` reports, whether higher is better (what Δm over any
    metric needs); a reported key absent from it (e.g. the chosen threshold) is a diagnostic, not a score.
    """

    directions: ClassVar[dict[str, bool]] = {}

    def __init__(self) -> None:
        self._acc: dict[str, torch.Tensor] = {}
        self.reset()

    @abstractmethod
    def _zeros(self) -> dict[str, torch.Tensor]:
        """Fresh accumulators (float64 / int64 sums)."""

    def reset(self) -> None:
        self._acc = self._zeros()

    def state(self) -> list[torch.Tensor]:
        """The accumulators themselves (in a fixed order): reduce them in place across processes."""
        return [self._acc[k] for k in sorted(self._acc)]

    def merge(self, other: Meter) -> None:
        """Add another meter's sums into this one (e.g. meters of several data shards)."""
        for k in self._acc:
            self._acc[k] += other._acc[k].to(self._acc[k].device)

    @abstractmethod
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """``pred`` is the task head's raw output (B, C, H, W); ``target`` the label batch."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """The metrics over everything seen since the last reset."""
