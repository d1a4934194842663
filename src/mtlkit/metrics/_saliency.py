"""Saliency maxF: F-measure with β² = 0.3 from TP / predicted / actual positives summed over the split
at each threshold, best threshold (as the SaliencyMeter of the ATRC / InvPT evaluation code, step 0.05)."""

from __future__ import annotations

import torch

from mtlkit.metrics._base import Meter


def f_measure(precision: torch.Tensor, recall: torch.Tensor, beta2: float = 0.3) -> torch.Tensor:
    return (1 + beta2) * precision * recall / (beta2 * precision + recall).clamp_min(1e-12)


class SaliencyMeter(Meter):
    """maxF (primary, %) over thresholds on the predicted probability; ``pred`` are logits."""

    directions = {"maxF": True}

    def __init__(self, beta2: float = 0.3, step: float = 0.05, ignore_index: int = 255) -> None:
        self.beta2 = beta2
        self.thresholds = torch.arange(step, 1.0 - 1e-9, step, dtype=torch.float64)
        self.ignore_index = ignore_index
        super().__init__()

    def _zeros(self) -> dict[str, torch.Tensor]:
        n = len(self.thresholds)
        z = torch.zeros(n, dtype=torch.float64)
        return {"tp": z.clone(), "pp": z.clone(), "ap": z.clone()}

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        prob = torch.sigmoid(pred.detach().double()).reshape(target.shape).cpu()
        target = target.cpu()
        valid = target != self.ignore_index
        p, g = prob[valid], target[valid].double()
        above = p.unsqueeze(0) >= self.thresholds.unsqueeze(1)  # (thresholds, pixels)
        self._acc["tp"] += (above * g).sum(1)
        self._acc["pp"] += above.sum(1)
        self._acc["ap"] += g.sum()

    def compute(self) -> dict[str, float]:
        tp, pp, ap = self._acc["tp"], self._acc["pp"], self._acc["ap"]
        precision = tp / pp.clamp_min(1e-12)
        recall = tp / ap.clamp_min(1e-12)
        f = f_measure(precision, recall, self.beta2)
        best = int(f.argmax())
        return {"maxF": float(f[best] * 100), "threshold": float(self.thresholds[best])}
