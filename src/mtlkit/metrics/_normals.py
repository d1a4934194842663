"""Surface normals: angular error 2·atan2(||p - g||, ||p + g||) in degrees after L2-normalising.

The median over the split uses a 0.01° histogram (exact to that resolution, sum-reducible across processes);
like ``np.median`` it averages the two middle errors when their count is even.
"""

from __future__ import annotations

import torch

from mtlkit.metrics._base import Meter

_BIN = 0.01  # degrees per histogram bin
_NBINS = int(180 / _BIN) + 1
_THRESHOLDS = ("11.25", "22.5", "30")


def angular_error(pred: torch.Tensor, target: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Angle in degrees between ``pred`` and ``target`` along ``dim`` (both L2-normalised first).

    The atan2 form is accurate for tiny and near-180° angles, unlike acos of the dot product.
    """
    p = torch.nn.functional.normalize(pred.double(), dim=dim)
    g = torch.nn.functional.normalize(target.double(), dim=dim)
    return torch.rad2deg(2 * torch.atan2((p - g).norm(dim=dim), (p + g).norm(dim=dim)))


class NormalsMeter(Meter):
    """Mean (primary), median and RMSE of the angular error, and % of pixels within 11.25/22.5/30 deg."""

    directions = {"mean": False, "median": False, "rmse": False, "11.25": True, "22.5": True, "30": True}

    def _zeros(self) -> dict[str, torch.Tensor]:
        z = torch.zeros((), dtype=torch.float64)
        acc = {"n": z.clone(), "sum": z.clone(), "sq": z.clone(), "hist": torch.zeros(_NBINS, dtype=torch.int64)}
        acc.update({f"within_{t}": z.clone() for t in _THRESHOLDS})
        return acc

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        valid = target.abs().sum(1) > 0  # all-zero normals = invalid
        err = angular_error(pred.detach(), target, dim=1)[valid].cpu()
        a = self._acc
        a["n"] += err.numel()
        a["sum"] += err.sum()
        a["sq"] += (err**2).sum()
        bins = torch.clamp((err / _BIN).round().long(), 0, _NBINS - 1)
        a["hist"] += torch.bincount(bins, minlength=_NBINS)
        for t in _THRESHOLDS:
            a[f"within_{t}"] += (err < float(t)).sum()

    def compute(self) -> dict[str, float]:
        n = self._acc["n"].item()
        if n == 0:
            return {k: float("nan") for k in ("mean", "median", "rmse", "11.25", "22.5", "30")}
        # median as np.median of all errors (ASTMT / ATRC eval_normals): the middle order statistic, or the
        # mean of the two middle ones for an even count; order statistic k is the first bin with cum >= k
        cum = self._acc["hist"].cumsum(0)
        n_int = int(round(n))
        ranks = torch.tensor([(n_int + 1) // 2, n_int // 2 + 1], dtype=cum.dtype)
        median = float(torch.searchsorted(cum, ranks).double().mean() * _BIN)
        out = {
            "mean": float(self._acc["sum"] / n),
            "median": median,
            "rmse": float((self._acc["sq"] / n).sqrt()),
        }
        out.update({t: float(self._acc[f"within_{t}"] / n * 100) for t in _THRESHOLDS})
        return out
