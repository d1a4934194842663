"""Meter of the generic regression task: MAE, RMSE and R² (torchmetrics underneath, float64 states).

Reduction across processes: torchmetrics' own sync (see :mod:`mtlkit.metrics._torchmetrics`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mtlkit.metrics._torchmetrics import TM_OPTIONS, TorchMetricsMeter, nan_mean

if TYPE_CHECKING:
    from torchmetrics import Metric


class GenericRegressionMeter(TorchMetricsMeter):
    """``mae`` and ``rmse`` pooled over every valid target element, ``r2`` (coefficient of determination) per
    output then averaged over outputs (scikit-learn's ``multioutput="uniform_average"``).

    Predictions (N, k) or any shape with as many elements as the targets; targets (N, k) (or (N,) for
    ``num_targets=1``). Non-finite targets (NaN: a missing label) are skipped, element by element.
    R² edge cases follow torchmetrics and scikit-learn's default: constant targets give 1.0 for a perfect
    prediction and 0.0 otherwise; an output with fewer than two valid targets is left out of the average;
    nothing valid at all gives NaN for every metric.
    """

    directions = {"mae": False, "rmse": False, "r2": True}

    def __init__(self, num_targets: int = 1) -> None:
        self.num_targets = num_targets
        super().__init__()

    def _build(self) -> dict[str, Metric]:
        from torchmetrics.regression import MeanAbsoluteError, MeanSquaredError, R2Score

        metrics: dict[str, Metric] = {"mae": MeanAbsoluteError(**TM_OPTIONS), "mse": MeanSquaredError(**TM_OPTIONS)}
        metrics.update({f"r2_{j}": R2Score(**TM_OPTIONS) for j in range(self.num_targets)})
        for m in metrics.values():
            m.set_dtype(torch.float64)  # sums of squares over a split: float32 would lose R²'s total variance
        return metrics

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        k = self.num_targets
        y = target.detach().cpu().double().reshape(-1, k)
        p = pred.detach().cpu().double().reshape(y.shape)
        valid = torch.isfinite(y)
        if valid.any():
            self.metrics["mae"].update(p[valid], y[valid])
            self.metrics["mse"].update(p[valid], y[valid])
        for j in range(k):
            keep = valid[:, j]
            if keep.any():
                self.metrics[f"r2_{j}"].update(p[keep, j], y[keep, j])

    def _compute(self) -> dict[str, float]:
        if self.metrics["mae"].total == 0:
            return {k: float("nan") for k in self.directions}
        r2s = [self.metrics[f"r2_{j}"] for j in range(self.num_targets)]
        counts = torch.stack([m.total.double() for m in r2s])
        values = torch.stack([m.compute().double() if m.total >= 2 else torch.tensor(torch.nan) for m in r2s])
        return {
            "mae": float(self.metrics["mae"].compute()),
            "rmse": float(self.metrics["mse"].compute().sqrt()),
            "r2": nan_mean(values, counts >= 2),
        }
