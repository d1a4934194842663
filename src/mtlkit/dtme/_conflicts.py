"""Token-space gradient conflicts: per token, a task pair (i, j) conflicts in a space when c_i · c_j < 0.

DTME-MTL Sec. 4.2 (DESIGN.md §6.3): the per-task gradients w.r.t. a layer's output tokens are projected
onto the range and null space; a (token, pair) conflicts in the range space when the dot product of the
two range coordinates is negative, likewise in the null space. Per layer we keep, for every pair, the
share of tokens in conflict averaged over calibration batches (a symmetric T×T matrix, zero diagonal);
the layer's conflict rate is the mean over pairs, i.e. the share of conflicting (token, pair).
"""

from __future__ import annotations

import torch


def pair_conflict_counts(coords: torch.Tensor) -> torch.Tensor:
    """``coords`` (T, M, d): per-task coordinates of M tokens -> (T, T) number of tokens with c_i·c_j < 0.

    The diagonal is zero. With d = 0 (an empty space) nothing conflicts.
    """
    t = coords.shape[0]
    if coords.shape[-1] == 0:
        return torch.zeros(t, t, dtype=torch.long, device=coords.device)
    dots = torch.einsum("imd,jmd->ijm", coords, coords)
    counts = (dots < 0).sum(-1)
    counts.fill_diagonal_(0)
    return counts


class ConflictAccumulator:
    """Per-pair conflict rates of one layer in the range and null space, averaged over batches."""

    def __init__(self, num_tasks: int) -> None:
        self.num_tasks = num_tasks
        self.range_sum = torch.zeros(num_tasks, num_tasks, dtype=torch.float64)
        self.null_sum = torch.zeros(num_tasks, num_tasks, dtype=torch.float64)
        self.batches = 0

    def update(self, range_coords: torch.Tensor, null_coords: torch.Tensor) -> None:
        """Add one batch: coordinates (T, M, k) and (T, M, D - k) of the same M tokens."""
        m = range_coords.shape[1]
        self.range_sum += pair_conflict_counts(range_coords).cpu().double() / m
        self.null_sum += pair_conflict_counts(null_coords).cpu().double() / m
        self.batches += 1

    def _mean(self, total: torch.Tensor) -> torch.Tensor:
        return total / self.batches if self.batches else torch.full_like(total, float("nan"))

    def range_pairs(self) -> torch.Tensor:
        return self._mean(self.range_sum)

    def null_pairs(self) -> torch.Tensor:
        return self._mean(self.null_sum)

    @staticmethod
    def layer_rate(pairs: torch.Tensor) -> float:
        """Mean over the T(T-1)/2 pairs (upper triangle) of the per-pair rates; 0 for a single task."""
        t = pairs.shape[0]
        if t < 2:
            return 0.0
        iu = torch.triu_indices(t, t, 1)
        return float(pairs[iu[0], iu[1]].mean())
