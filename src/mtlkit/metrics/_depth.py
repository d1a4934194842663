"""Depth: RMSE pooled over all valid pixels (gt > 0) of the split, as the ATRC / InvPT evaluation does."""

from __future__ import annotations

import torch

from mtlkit.metrics._base import Meter


class DepthMeter(Meter):
    """RMSE (primary), mean absolute error, absolute relative error and log10 error, all pixel-pooled."""

    directions = {"rmse": False, "l1": False, "abs_rel": False, "log10": False}

    def _zeros(self) -> dict[str, torch.Tensor]:
        z = torch.zeros((), dtype=torch.float64)
        return {"n": z.clone(), "sq": z.clone(), "abs": z.clone(), "rel": z.clone(), "log10": z.clone()}

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        pred = pred.detach().double().reshape(target.shape)
        target = target.double()
        valid = target > 0
        p, g = pred[valid], target[valid]
        diff = p - g
        a = self._acc
        a["n"] += valid.sum().cpu()
        a["sq"] += (diff**2).sum().cpu()
        a["abs"] += diff.abs().sum().cpu()
        a["rel"] += (diff.abs() / g).sum().cpu()
        a["log10"] += (torch.log10(p.clamp_min(1e-9)) - torch.log10(g)).abs().sum().cpu()

    def compute(self) -> dict[str, float]:
        n = self._acc["n"].item()
        if n == 0:
            return {k: float("nan") for k in ("rmse", "l1", "abs_rel", "log10")}
        return {
            "rmse": float((self._acc["sq"] / n).sqrt()),
            "l1": float(self._acc["abs"] / n),
            "abs_rel": float(self._acc["rel"] / n),
            "log10": float(self._acc["log10"] / n),
        }
