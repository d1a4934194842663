"""Generic pooled L1 / RMSE (Taskonomy-style dense regression) and classification accuracy."""

from __future__ import annotations

import torch

from mtlkit.metrics._base import Meter


class RegressionMeter(Meter):
    """Mean absolute error and RMSE pooled over valid elements (``mask`` = target != ignore, finite)."""

    directions = {"l1": False, "rmse": False}

    def __init__(self, ignore_value: float | None = None) -> None:
        self.ignore_value = ignore_value
        super().__init__()

    def _zeros(self) -> dict[str, torch.Tensor]:
        z = torch.zeros((), dtype=torch.float64)
        return {"n": z.clone(), "abs": z.clone(), "sq": z.clone()}

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred = pred.detach().double().reshape(target.shape)
        target = target.double()
        valid = torch.isfinite(target)
        if self.ignore_value is not None:
            valid &= target != self.ignore_value
        d = (pred - target)[valid]
        self._acc["n"] += d.numel()
        self._acc["abs"] += d.abs().sum().cpu()
        self._acc["sq"] += (d**2).sum().cpu()

    def compute(self) -> dict[str, float]:
        n = self._acc["n"].item()
        if n == 0:
            return {"l1": float("nan"), "rmse": float("nan")}
        return {"l1": float(self._acc["abs"] / n), "rmse": float((self._acc["sq"] / n).sqrt())}


class AccuracyMeter(Meter):
    """Top-1 accuracy (%) of class logits (B, C) against labels (B,)."""

    directions = {"accuracy": True}

    def _zeros(self) -> dict[str, torch.Tensor]:
        return {"correct": torch.zeros((), dtype=torch.float64), "n": torch.zeros((), dtype=torch.float64)}

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self._acc["correct"] += (pred.argmax(1) == target).sum().cpu()
        self._acc["n"] += target.numel()

    def compute(self) -> dict[str, float]:
        n = self._acc["n"].item()
        return {"accuracy": float(self._acc["correct"] / n * 100) if n else float("nan")}
