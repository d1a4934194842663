"""Meters of the generic classification tasks (torchmetrics underneath; reduction: torchmetrics' own sync).

All inputs are raw head outputs (logits): the meters apply softmax / sigmoid themselves, so torchmetrics' guess
"values outside [0, 1] are logits" never decides. Targets equal to ``ignore_index`` are skipped. Values are
fractions in [0, 1], as torchmetrics and scikit-learn report them.

Edge cases, chosen to match scikit-learn where it defines the metric and NaN where it does not:

- macro-F1 averages over the classes that occur in the targets or the predictions of the split (scikit-learn's
  default ``labels``): a class never seen nor predicted is left out, a predicted-but-absent class counts 0.
- AUROC of a class is defined only when the split has positives and negatives of it; macro AUROC averages the
  defined classes (NaN when none is); scikit-learn raises instead.
- mAP averages the average precision of the labels with at least one positive (NaN when none has).
- Nothing seen (or everything ignored): every metric is NaN.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from mtlkit.metrics._torchmetrics import TM_OPTIONS, TorchMetricsMeter, nan_mean

if TYPE_CHECKING:
    from torchmetrics import Metric


def _per_class(stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(positives, negatives, occurs)`` per class from torchmetrics stat scores ``[tp, fp, tn, fn, support]``."""
    tp, fp, tn, fn = stats[..., 0], stats[..., 1], stats[..., 2], stats[..., 3]
    return tp + fn, fp + tn, (tp + fp + fn) > 0


class ClassificationMeter(TorchMetricsMeter):
    """Multi-class: ``accuracy`` (top-1), ``macro_f1``, ``auroc`` (one-vs-rest, macro) of logits (N, C, ...)
    against labels (N, ...). ``auroc_thresholds``: ``None`` exact (keeps every score), an int binned
    (constant memory, approximate), as torchmetrics' ``thresholds``."""

    directions = {"accuracy": True, "macro_f1": True, "auroc": True}

    def __init__(self, num_classes: int, ignore_index: int | None = -100, auroc_thresholds: int | None = None) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.auroc_thresholds = auroc_thresholds
        super().__init__()

    def _build(self) -> dict[str, Metric]:
        from torchmetrics.classification import (
            MulticlassAccuracy,
            MulticlassAUROC,
            MulticlassF1Score,
            MulticlassStatScores,
        )

        c = self.num_classes
        return {
            "stats": MulticlassStatScores(c, average="none", **TM_OPTIONS),
            "accuracy": MulticlassAccuracy(c, average="micro", **TM_OPTIONS),
            "f1": MulticlassF1Score(c, average="none", **TM_OPTIONS),
            "auroc": MulticlassAUROC(c, average="none", thresholds=self.auroc_thresholds, **TM_OPTIONS),
        }

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        logits = pred.detach().float().cpu()
        if logits.dim() > 2:  # (N, C, d1, ...) -> one row per element
            logits = logits.movedim(1, -1)
        logits = logits.reshape(-1, self.num_classes)
        labels = target.detach().cpu().long().reshape(-1)
        if self.ignore_index is not None:
            keep = labels != self.ignore_index
            logits, labels = logits[keep], labels[keep]
        if not labels.numel():
            return
        probs = logits.softmax(-1)
        for m in self.metrics.values():
            m.update(probs, labels)

    def _compute(self) -> dict[str, float]:
        positives, negatives, occurs = _per_class(self.metrics["stats"].compute())
        if positives.sum() == 0:
            return {k: float("nan") for k in self.directions}
        return {
            "accuracy": float(self.metrics["accuracy"].compute()),
            "macro_f1": nan_mean(self.metrics["f1"].compute(), occurs),
            "auroc": nan_mean(self.metrics["auroc"].compute(), (positives > 0) & (negatives > 0)),
        }


class BinaryMeter(TorchMetricsMeter):
    """Binary: ``accuracy``, ``f1`` (of the positive class), ``macro_f1`` (both classes), ``auroc`` of logits
    against 0/1 targets of the same number of elements; predicted positive when sigmoid > ``threshold``."""

    directions = {"accuracy": True, "f1": True, "macro_f1": True, "auroc": True}

    def __init__(
        self, threshold: float = 0.5, ignore_index: int | None = -100, auroc_thresholds: int | None = None
    ) -> None:
        self.threshold = threshold
        self.ignore_index = ignore_index
        self.auroc_thresholds = auroc_thresholds
        super().__init__()

    def _build(self) -> dict[str, Metric]:
        from torchmetrics.classification import (
            BinaryAccuracy,
            BinaryAUROC,
            BinaryF1Score,
            MulticlassF1Score,
            MulticlassStatScores,
        )

        return {
            "stats": MulticlassStatScores(2, average="none", **TM_OPTIONS),  # per class: which of the two occur
            "accuracy": BinaryAccuracy(self.threshold, **TM_OPTIONS),
            "f1": BinaryF1Score(self.threshold, **TM_OPTIONS),
            "class_f1": MulticlassF1Score(2, average="none", **TM_OPTIONS),
            "auroc": BinaryAUROC(thresholds=self.auroc_thresholds, **TM_OPTIONS),
        }

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        labels = target.detach().cpu().long().reshape(-1)
        probs = pred.detach().float().cpu().reshape(-1).sigmoid()
        if probs.numel() != labels.numel():
            raise ValueError(f"binary meter: {probs.numel()} predictions for {labels.numel()} targets")
        if self.ignore_index is not None:
            keep = labels != self.ignore_index
            probs, labels = probs[keep], labels[keep]
        if not labels.numel():
            return
        hard = (probs > self.threshold).long()  # torchmetrics' binary rule
        self.metrics["stats"].update(hard, labels)
        self.metrics["class_f1"].update(hard, labels)
        for k in ("accuracy", "f1", "auroc"):
            self.metrics[k].update(probs, labels)

    def _compute(self) -> dict[str, float]:
        positives, negatives, occurs = _per_class(self.metrics["stats"].compute())
        if positives.sum() == 0:
            return {k: float("nan") for k in self.directions}
        both = bool(positives[1] > 0 and negatives[1] > 0)
        return {
            "accuracy": float(self.metrics["accuracy"].compute()),
            "f1": float(self.metrics["f1"].compute()),
            "macro_f1": nan_mean(self.metrics["class_f1"].compute(), occurs),
            "auroc": float(self.metrics["auroc"].compute()) if both else float("nan"),
        }


class MultilabelMeter(TorchMetricsMeter):
    """Multi-label: ``mAP`` (mean over labels of average precision) and macro ``auroc`` of logits (N, L)
    against 0/1 targets (N, L); an ``ignore_index`` entry skips that label of that sample only."""

    directions = {"mAP": True, "auroc": True}

    def __init__(self, num_labels: int, ignore_index: int | None = -100, thresholds: int | None = None) -> None:
        self.num_labels = num_labels
        self.ignore_index = ignore_index
        self.thresholds = thresholds
        super().__init__()

    def _build(self) -> dict[str, Metric]:
        from torchmetrics.classification import MultilabelAUROC, MultilabelAveragePrecision, MultilabelStatScores

        n, ig, th = self.num_labels, self.ignore_index, self.thresholds
        return {
            "stats": MultilabelStatScores(n, average="none", ignore_index=ig, **TM_OPTIONS),
            "ap": MultilabelAveragePrecision(n, average="none", thresholds=th, ignore_index=ig, **TM_OPTIONS),
            "auroc": MultilabelAUROC(n, average="none", thresholds=th, ignore_index=ig, **TM_OPTIONS),
        }

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        probs = pred.detach().float().cpu().reshape(-1, self.num_labels).sigmoid()
        labels = target.detach().cpu().long().reshape(-1, self.num_labels)
        if not labels.numel():
            return
        for m in self.metrics.values():
            m.update(probs, labels)

    def _compute(self) -> dict[str, float]:
        positives, negatives, _ = _per_class(self.metrics["stats"].compute())
        if (positives + negatives).sum() == 0:
            return {k: float("nan") for k in self.directions}
        return {
            "mAP": nan_mean(self.metrics["ap"].compute(), positives > 0),
            "auroc": nan_mean(self.metrics["auroc"].compute(), (positives > 0) & (negatives > 0)),
        }
