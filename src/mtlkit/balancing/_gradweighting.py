"""Base of loss weightings computed from per-task gradient norms (AvgNorm, GradNorm).

One forward, per-task gradients with respect to a set of shared parameters (the last shared layer by
default), weights from them, then one backward of Σ_t w_t L_t that reuses those gradients: the parameters
they were taken of get Σ_t w_t ∇L_t from them, and the backward of the rest starts below them
(:meth:`~mtlkit.balancing._grads.TaskGradients.cut_jacobian`), so no part of the network is differentiated
twice for the same task.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch

from mtlkit.balancing._base import (
    Balancer,
    grad_scale_of,
    mark_overflow,
    resolve_last_shared,
    resolve_shared,
    scaled,
    solver_view,
)
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
        #: the loss scale of the current step (None without a GradScaler): gradients the method writes itself
        #: (GradNorm's weights) are multiplied by it, like every other ``.grad``
        self.grad_scale: float | None = None

    @abstractmethod
    def compute_weights(self, jac: torch.Tensor, losses: list[torch.Tensor]) -> tuple[list[float], dict[str, Any]]:
        """Weights (one per task, finite) from the Jacobian rows; extra info for the log."""

    def backward(self, losses, shared=None, features=None, **context):
        self._check_tasks(losses)
        if self.params == "last":
            params = resolve_last_shared(self.name, shared, context)
        else:
            params = resolve_shared(self.name, shared, context)
        scale = grad_scale_of(self.name, context)
        values = [losses[t] for t in self.tasks]
        tg = TaskGradients([scaled(v, scale) for v in values], features, self.chunk_size)
        raw = tg.cut_jacobian(params).detach()  # kept by tg for the final backward: unscale a copy
        jac, gramian, finite = finite_rows(solver_view(raw if scale is None else raw.clone(), scale))
        if scale is not None and not bool(finite.all()):
            # an overflow of the loss scale: no decision (state untouched); the scaler skips the step
            tg.backward_weighted_cut([1.0] * len(values))
            mark_overflow(params)
            return {"weights": dict.fromkeys(self.tasks, 1.0), "overflow": 1,
                    "nonfinite_tasks": [t for t, f in zip(self.tasks, finite.tolist(), strict=True) if not f]}
        self.grad_scale = scale
        weights, extra = self.compute_weights(jac, values)
        weights = [w if f else 0.0 for w, f in zip(weights, finite.tolist(), strict=True)]
        tg.backward_weighted_cut(weights)
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
