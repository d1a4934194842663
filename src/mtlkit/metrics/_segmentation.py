"""Semantic segmentation / human parts: mIoU from a confusion matrix accumulated over the split."""

from __future__ import annotations

import torch

from mtlkit.metrics._base import Meter


def confusion_matrix(
    pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """``cm[g, p]`` = number of pixels of ground-truth class g predicted as p (ignored pixels skipped)."""
    pred = pred.reshape(-1).long()
    target = target.reshape(-1).long()
    valid = (target != ignore_index) & (target >= 0) & (target < num_classes)
    idx = target[valid] * num_classes + pred[valid].clamp(0, num_classes - 1)
    return torch.bincount(idx, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_per_class(cm: torch.Tensor) -> torch.Tensor:
    """IoU of each class: TP / (TP + FP + FN); NaN for a class absent from both prediction and truth."""
    cm = cm.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def mean_iou(cm: torch.Tensor) -> float:
    """Mean IoU over the classes that occur (nanmean), in %, as the standard evaluation code reports."""
    return float(torch.nanmean(iou_per_class(cm)) * 100)


class SegmentationMeter(Meter):
    """mIoU (%) and pixel accuracy (%) over a split; ``pred`` may be logits (B, C, H, W) or labels."""

    directions = {"mIoU": True, "pixel_acc": True}

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        super().__init__()

    def _zeros(self) -> dict[str, torch.Tensor]:
        return {"cm": torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)}

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        labels = pred.argmax(1) if pred.dim() == target.dim() + 1 else pred
        cm = confusion_matrix(labels.cpu(), target.cpu(), self.num_classes, self.ignore_index)
        self._acc["cm"] += cm.to(self._acc["cm"].device)

    def compute(self) -> dict[str, float]:
        cm = self._acc["cm"]
        total = cm.sum().item()
        acc = float(cm.diag().sum().item() / total * 100) if total else float("nan")
        return {"mIoU": mean_iou(cm), "pixel_acc": acc}
