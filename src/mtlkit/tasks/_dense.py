"""Built-in dense tasks (and Taskonomy's), with the losses and meters of the papers' code.

Built-in dense tasks follow the ATRC / InvPT / MTI-Net reference code:

- ``semseg`` / ``parts``: cross-entropy, ignore 255; primary mIoU.
- ``depth``: L1 on valid pixels (gt > 0); primary RMSE (pooled over the split).
- ``normals``: L1 between the L2-normalised prediction and the unit ground truth on valid pixels
  (ATRC's ``NormalsLoss(normalize=True)``); primary mean angular error.
- ``edge``: weighted BCE with positive weight 0.95, summed and divided by the pixel count
  (MTI-Net's ``BalancedBinaryCrossEntropyLoss(pos_weight=0.95)``); primary odsF.
- ``saliency``: BCE on valid pixels; primary maxF (β² = 0.3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from mtlkit.errors import MtlkitError
from mtlkit.metrics import (
    BSDSEdgeMeter,
    DepthMeter,
    EdgeMeter,
    Meter,
    NormalsMeter,
    RegressionMeter,
    SaliencyMeter,
    SegmentationMeter,
)
from mtlkit.tasks._base import TASKS, Task, zero_loss

# ----------------------------------------------------------------------------------------- losses


def cross_entropy_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    target = target.long()
    if not (target != 255).any():
        return zero_loss(pred)
    return F.cross_entropy(pred, target, ignore_index=255)


# ``count_fn`` of each loss below: how many elements it averages over (Task.count_fn)
def _count_labelled(t: torch.Tensor) -> torch.Tensor:
    return (t != 255).sum()


def _count_nonzero(t: torch.Tensor) -> torch.Tensor:
    return (t != 0).sum()


def _count_positive(t: torch.Tensor) -> torch.Tensor:
    return (t > 0).sum()


def _count_normals(t: torch.Tensor) -> torch.Tensor:
    return (t.abs().sum(1) > 0).sum() * t.shape[1]


def depth_l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # (B, 1, H, W) vs a (B, H, W) target would broadcast silently to (B, B, H, W): match shapes first
    pred = pred.reshape(target.shape)
    valid = target > 0
    if not valid.any():
        return zero_loss(pred)
    return (pred - target).abs()[valid].mean()


def normals_l1_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    valid = (target.abs().sum(1, keepdim=True) > 0).expand_as(target)
    if not valid.any():
        return zero_loss(pred)
    return (F.normalize(pred, dim=1) - target).abs()[valid].mean()


def balanced_bce_loss(pred: torch.Tensor, target: torch.Tensor, pos_weight: float = 0.95) -> torch.Tensor:
    pred = pred.reshape(target.shape)
    valid = target != 255
    t = torch.where(valid, target, torch.zeros_like(target)).float()
    per_pixel = F.binary_cross_entropy_with_logits(pred, t, reduction="none")
    weight = torch.where(t > 0.5, pos_weight, 1.0 - pos_weight) * valid
    return (per_pixel * weight).sum() / target.numel()


def bce_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    pred = pred.reshape(target.shape)
    valid = target != 255
    if not valid.any():
        return zero_loss(pred)
    return F.binary_cross_entropy_with_logits(pred[valid], target[valid].float())


# ------------------------------------------------------------------------------------ built-ins


def _segmentation(name: str, default_classes: int) -> Callable[..., Task]:
    def factory(num_classes: int = default_classes) -> Task:
        return Task(
            name=name,
            channels=num_classes,
            loss_fn=cross_entropy_loss,
            meter_factory=lambda: SegmentationMeter(num_classes),
            primary="mIoU",
            higher_is_better=True,
            display="labels",
            params={"num_classes": num_classes},
            count_fn=_count_labelled,
        )

    return factory


TASKS.register("semseg", _segmentation("semseg", 40))
TASKS.register("parts", _segmentation("parts", 7))


@TASKS.register("depth")
def depth_task() -> Task:
    return Task("depth", 1, depth_l1_loss, DepthMeter, "rmse", False, display="depth", count_fn=_count_positive)


@TASKS.register("normals")
def normals_task() -> Task:
    return Task("normals", 3, normals_l1_loss, NormalsMeter, "mean", False, display="normals",
                count_fn=_count_normals)


@TASKS.register("edge")
def edge_task(
    max_dist: float = 0.011,
    pos_weight: float = 0.95,
    protocol: str = "tolerance",
    num_thresholds: int | None = None,
    workers: int | None = None,
) -> Task:
    """Edge detection; ``protocol="bsds"`` scores odsF by the BSDS protocol (thinning, one-to-one matching,
    seism's 99 thresholds unless ``num_thresholds``; :class:`mtlkit.metrics.BSDSEdgeMeter`, used for the real
    datasets), ``"tolerance"`` by the cheaper tolerance-matched F of :class:`mtlkit.metrics.EdgeMeter`.
    ``workers``: processes of the BSDS meter (None = one per CPU for large images, 0 = serial)."""
    if protocol == "bsds":
        def meter() -> Meter:
            return BSDSEdgeMeter(max_dist=max_dist, thresholds=num_thresholds, workers=workers)
    elif protocol == "tolerance":
        def meter() -> Meter:
            return EdgeMeter(max_dist=max_dist) if num_thresholds is None else EdgeMeter(max_dist, num_thresholds)
    else:
        raise MtlkitError(f"edge protocol must be 'bsds' or 'tolerance', got {protocol!r}")
    params: dict[str, Any] = {"max_dist": max_dist, "pos_weight": pos_weight, "protocol": protocol}
    if num_thresholds is not None:
        params["num_thresholds"] = num_thresholds
    if workers is not None:
        params["workers"] = workers
    return Task(
        "edge",
        1,
        lambda p, t: balanced_bce_loss(p, t, pos_weight),
        meter,
        "odsF",
        True,
        display="prob",
        params=params,
        count_fn=lambda t: t.numel(),
    )


@TASKS.register("saliency")
def saliency_task() -> Task:
    return Task("saliency", 1, bce_loss, SaliencyMeter, "maxF", True, display="prob", count_fn=_count_labelled)


# ------------------------------------------------------------------------------- Taskonomy tasks
# The 11 Taskonomy tasks of the seeds' Table 3, with targets normalised as Chen et al. (2023)'s loader does
# (see mtlkit.data.taskonomy). Losses: L1 (the seeds use L1 for dense regression), MSE for curvature (Chen et
# al.'s L2). Metrics: L1, RMSE for curvature, pooled over the split; depth targets use 0 for "no surface",
# excluded from loss and metric.


def masked_l1_loss(pred: torch.Tensor, target: torch.Tensor, ignore_zero: bool = False) -> torch.Tensor:
    pred = pred.reshape(target.shape)
    if not ignore_zero:
        return (pred - target).abs().mean()
    valid = target != 0
    if not valid.any():
        return zero_loss(pred)
    return (pred - target).abs()[valid].mean()


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(pred.reshape(target.shape), target)


def _taskonomy(name: str, channels: int, display: str = "regression") -> Callable[..., Task]:
    depth = name.startswith("depth_")
    curvature = name == "principal_curvature"

    def factory() -> Task:
        return Task(
            name=name,
            channels=channels,
            loss_fn=mse_loss if curvature else (lambda p, t: masked_l1_loss(p, t, ignore_zero=depth)),
            meter_factory=lambda: RegressionMeter(ignore_value=0.0 if depth else None),
            primary="rmse" if curvature else "l1",
            higher_is_better=False,
            display=display,
            count_fn=_count_nonzero if depth else None,
        )

    return factory


for _name, _channels, _display in (
    ("depth_euclidean", 1, "depth"),
    ("depth_zbuffer", 1, "depth"),
    ("edge_occlusion", 1, "regression"),
    ("edge_texture", 1, "regression"),
    ("keypoints2d", 1, "regression"),
    ("keypoints3d", 1, "regression"),
    ("normal", 3, "regression"),
    ("principal_curvature", 2, "regression"),
    ("reshading", 1, "regression"),
    ("segment_unsup2d", 1, "regression"),
    ("segment_unsup25d", 1, "regression"),
):
    TASKS.register(_name, _taskonomy(_name, _channels, _display))
