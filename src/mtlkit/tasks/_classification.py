"""Classification tasks: MultiMNIST's digits and the generic ``classification``, ``binary``, ``multilabel``.

Every generic task takes ``name=`` (its key in the model's outputs and the batch) and ``primary=`` (any score
of its meter), and skips targets equal to ``ignore_index`` in loss and metrics (a missing label of a task).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mtlkit.errors import MtlkitError
from mtlkit.metrics import AccuracyMeter, BinaryMeter, ClassificationMeter, MultilabelMeter
from mtlkit.tasks._base import TASKS, Task, check_primary, zero_loss

# ------------------------------------------------------------------------------- MultiMNIST tasks


def classification_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(pred, target.long())


def _digit(name: str) -> Callable[..., Task]:
    def factory(num_classes: int = 10) -> Task:
        return Task(name, num_classes, classification_loss, AccuracyMeter, "accuracy", True,
                    kind="classification", display="labels", params={"num_classes": num_classes})

    return factory


TASKS.register("left", _digit("left"))
TASKS.register("right", _digit("right"))


# -------------------------------------------------------------------------------- generic losses


def masked_cross_entropy(
    pred: torch.Tensor, target: torch.Tensor, ignore_index: int = -100, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy of logits (N, C, ...) against labels (N, ...); 0 (with a gradient) when all are ignored."""
    target = target.long().reshape(pred.shape[0], *pred.shape[2:])
    if not (target != ignore_index).any():
        return zero_loss(pred)
    return F.cross_entropy(pred, target, ignore_index=ignore_index, label_smoothing=label_smoothing)


def masked_bce(
    pred: torch.Tensor, target: torch.Tensor, ignore_index: int = -100, pos_weight: float | None = None
) -> torch.Tensor:
    """Mean BCE-with-logits over the targets that are not ``ignore_index`` (soft targets in [0, 1] allowed)."""
    if pred.numel() != target.numel():
        raise MtlkitError(f"{pred.numel()} logits for {target.numel()} binary targets; the head needs one "
                          "output per target")
    pred = pred.reshape(target.shape)
    valid = target != ignore_index
    if not valid.any():
        return zero_loss(pred)
    weight = None if pos_weight is None else torch.tensor(pos_weight, dtype=pred.dtype, device=pred.device)
    return F.binary_cross_entropy_with_logits(pred[valid], target[valid].to(pred.dtype), pos_weight=weight)


# ------------------------------------------------------------------------------- generic factories


@TASKS.register("classification")
def classification_task(
    num_classes: int,
    *,
    name: str = "classification",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    primary: str = "accuracy",
    auroc_thresholds: int | None = None,
) -> Task:
    """Multi-class classification: ``num_classes`` logits, cross-entropy; accuracy, macro-F1, AUROC
    (:class:`~mtlkit.metrics.ClassificationMeter`); primary ``accuracy`` unless ``primary`` names another."""
    if not isinstance(num_classes, int) or num_classes < 2:
        raise MtlkitError(f"task {name!r}: num_classes must be an int >= 2, got {num_classes!r}")
    if not 0.0 <= label_smoothing < 1.0:
        raise MtlkitError(f"task {name!r}: label_smoothing must be in [0, 1), got {label_smoothing!r}")
    higher = check_primary(name, primary, ClassificationMeter.directions)
    return Task(
        name,
        num_classes,
        lambda p, t: masked_cross_entropy(p, t, ignore_index, label_smoothing),
        lambda: ClassificationMeter(num_classes, ignore_index, auroc_thresholds),
        primary,
        higher,
        kind="classification",
        display="labels",
        params={"num_classes": num_classes, "name": name, "ignore_index": ignore_index,
                "label_smoothing": label_smoothing, "primary": primary, "auroc_thresholds": auroc_thresholds},
        factory="classification",
        count_fn=lambda t: (t != ignore_index).sum(),
    )


@TASKS.register("binary")
def binary_task(
    *,
    name: str = "binary",
    pos_weight: float | None = None,
    threshold: float = 0.5,
    ignore_index: int = -100,
    primary: str = "auroc",
    auroc_thresholds: int | None = None,
) -> Task:
    """Binary classification: one logit, BCE (``pos_weight`` scales the positives' term); accuracy, F1,
    macro-F1, AUROC (:class:`~mtlkit.metrics.BinaryMeter`); primary ``auroc`` (as the census-income MTL papers
    report) unless ``primary`` names another. Predicted positive when sigmoid > ``threshold``."""
    if not 0.0 < threshold < 1.0:
        raise MtlkitError(f"task {name!r}: threshold must be in (0, 1), got {threshold!r}")
    if pos_weight is not None and not pos_weight > 0:
        raise MtlkitError(f"task {name!r}: pos_weight must be > 0, got {pos_weight!r}")
    higher = check_primary(name, primary, BinaryMeter.directions)
    return Task(
        name,
        1,
        lambda p, t: masked_bce(p, t, ignore_index, pos_weight),
        lambda: BinaryMeter(threshold, ignore_index, auroc_thresholds),
        primary,
        higher,
        kind="binary",
        display="prob",
        params={"name": name, "pos_weight": pos_weight, "threshold": threshold, "ignore_index": ignore_index,
                "primary": primary, "auroc_thresholds": auroc_thresholds},
        factory="binary",
        count_fn=lambda t: (t != ignore_index).sum(),
    )


@TASKS.register("multilabel")
def multilabel_task(
    num_labels: int,
    *,
    name: str = "multilabel",
    pos_weight: float | None = None,
    ignore_index: int = -100,
    primary: str = "mAP",
    thresholds: int | None = None,
) -> Task:
    """Multi-label classification: ``num_labels`` logits, BCE per label; mAP and macro AUROC
    (:class:`~mtlkit.metrics.MultilabelMeter`); primary ``mAP`` unless ``primary`` names another."""
    if not isinstance(num_labels, int) or num_labels < 1:
        raise MtlkitError(f"task {name!r}: num_labels must be a positive int, got {num_labels!r}")
    if pos_weight is not None and not pos_weight > 0:
        raise MtlkitError(f"task {name!r}: pos_weight must be > 0, got {pos_weight!r}")
    higher = check_primary(name, primary, MultilabelMeter.directions)
    return Task(
        name,
        num_labels,
        lambda p, t: masked_bce(p, t, ignore_index, pos_weight),
        lambda: MultilabelMeter(num_labels, ignore_index, thresholds),
        primary,
        higher,
        kind="multilabel",
        display="prob",
        params={"num_labels": num_labels, "name": name, "pos_weight": pos_weight, "ignore_index": ignore_index,
                "primary": primary, "thresholds": thresholds},
        factory="multilabel",
        count_fn=lambda t: (t != ignore_index).sum(),
    )
