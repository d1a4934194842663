"""Edge detection: optimal-dataset-scale F-measure (odsF).

This is a tolerance-matched F-measure: at each threshold a predicted edge pixel is a true positive when a
ground-truth edge lies within ``max_dist`` (fraction of the image diagonal), and a ground-truth pixel is
recalled when a predicted edge lies within it; counts are summed over the split per threshold and the best
threshold wins (ODS). It omits the BSDS protocol's thinning and one-to-one matching, so it is optimistic
against the official numbers; the exact protocol is :class:`mtlkit.metrics.BSDSEdgeMeter` where present.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from mtlkit.metrics._base import Meter


def _f(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    return np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)


def tolerance_counts(
    prob: np.ndarray, gt: np.ndarray, thresholds: np.ndarray, max_dist: float, valid: np.ndarray | None = None
) -> np.ndarray:
    """Counts (matched predictions, predictions, matched ground truth, ground truth) per threshold, shape (T, 4).

    ``prob``: (H, W) edge probability; ``gt``: (H, W) bool edges; ``max_dist``: fraction of the diagonal.
    """
    h, w = gt.shape
    tol = max_dist * float(np.hypot(h, w))
    valid = np.ones_like(gt, dtype=bool) if valid is None else valid
    gt = gt & valid
    dist_to_gt = ndimage.distance_transform_edt(~gt) if gt.any() else np.full(gt.shape, np.inf)
    out = np.zeros((len(thresholds), 4), dtype=np.float64)
    n_gt = gt.sum()
    for i, t in enumerate(thresholds):
        pe = (prob >= t) & valid
        n_p = pe.sum()
        if n_p:
            dist_to_p = ndimage.distance_transform_edt(~pe)
            out[i] = ((dist_to_gt[pe] <= tol).sum(), n_p, (dist_to_p[gt] <= tol).sum(), n_gt)
        else:
            out[i] = (0, 0, 0, n_gt)
    return out


class EdgeMeter(Meter):
    """odsF (primary, %) of a tolerance-matched F-measure; ``pred`` are logits (B, 1, H, W)."""

    directions = {"odsF": True}

    def __init__(self, max_dist: float = 0.011, num_thresholds: int = 19, ignore_index: int = 255) -> None:
        self.max_dist = max_dist
        self.thresholds = np.linspace(0, 1, num_thresholds + 2)[1:-1]
        self.ignore_index = ignore_index
        super().__init__()

    def _zeros(self) -> dict[str, torch.Tensor]:
        return {"counts": torch.zeros(len(self.thresholds), 4, dtype=torch.float64)}

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        prob = torch.sigmoid(pred.detach().float()).reshape(target.shape).cpu().numpy()
        tgt = target.cpu().numpy()
        for p, g in zip(prob.reshape(-1, *prob.shape[-2:]), tgt.reshape(-1, *tgt.shape[-2:]), strict=True):
            valid = g != self.ignore_index
            c = tolerance_counts(p, (g == 1) & valid, self.thresholds, self.max_dist, valid)
            self._acc["counts"] += torch.from_numpy(c)

    def compute(self) -> dict[str, float]:
        c = self._acc["counts"].numpy()
        precision = np.where(c[:, 1] > 0, c[:, 0] / np.maximum(c[:, 1], 1), 0.0)
        recall = np.where(c[:, 3] > 0, c[:, 2] / np.maximum(c[:, 3], 1), 0.0)
        f = _f(precision, recall)
        best = int(f.argmax())
        return {"odsF": float(f[best] * 100), "threshold": float(self.thresholds[best])}
