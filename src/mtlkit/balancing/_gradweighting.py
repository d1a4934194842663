"""Base of loss weightings computed from per-task gradient norms (AvgNorm, GradNorm).

One forward, per-task gradients with respect to a set of shared parameters (the last shared layer by
default), weights from them, then one backward of Σ_t w_t L_t; see :class:`~mtlkit.balancing._grads.TaskGradients`.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch

from mtlkit.balancing._base import Balancer, resolve_last_shared, resolve_shared
from mtlkit.balancing._grads import TaskGradients, finite_rows, gramian_stats
from mtlkit.errors import MtlkitError


class GradientLossWeighting(Balancer):
    """Weights from the per-task gradients ``J`` (T × n) of the last shared layer (``params="last"``) or of
    all shared parameters (``params="all"``); then one backward of Σ_t w_t L_t."""

    kind = "loss weighting"
    needs_features = True

    def __init__(self, tasks=None, params: str = "last", chunk_size: int | None = None) -> None:
        super().__init__(tasks)
        if params not in ("last", "all"):
            raise MtlkitError(f"{self.name}: params must be 'last' or 'all', got {params!r}")
        self.params, self.chunk_size = params, chunk_size

    @abstractmethod
    def compute_weights(self, jac: torch.Tensor, losses: list[torch.Tensor]) -> tuple[list[float], dict[str, Any]]:
        """Weights (one per task, finite) from the Jacobian rows; extra info for the log."""

    def backward(self, losses, shared=None, features=None, **context):
        self._check_tasks(losses)
        if self.params == "last":
            params = resolve_last_shared(self.name, shared, context)
        else:
            params = resolve_shared(self.name, shared, context)
        values = [losses[t] for t in self.tasks]
        tg = TaskGradients(values, features, self.chunk_size)
        jac, gramian, finite = finite_rows(tg.jacobian(params).detach())
        weights, extra = self.compute_weights(jac, values)
        weights = [w if f else 0.0 for w, f in zip(weights, finite.tolist(), strict=True)]
        tg.backward_weighted(weights)
        stats = gramian_stats(gramian)
        info = {
            "weights": dict(zip(self.tasks, weights, strict=True)),
            "grad_norms": dict(zip(self.tasks, stats["norms"].tolist(), strict=True)),
            "conflicts": stats["conflicts"],
            **extra,
        }
        if not bool(finite.all()):
            info["nonfinite_tasks"] = [t for t, f in zip(self.tasks, finite.tolist(), strict=True) if not f]
        return info
