"""Metrics as the standard evaluation code computes them, accumulated over whole splits."""

from mtlkit.metrics._base import Meter
from mtlkit.metrics._delta_m import delta_m, relative_gain
from mtlkit.metrics._depth import DepthMeter
from mtlkit.metrics._edge import EdgeMeter, tolerance_counts
from mtlkit.metrics._edge_bsds import BSDSEdgeMeter, bsds_counts, correspond_count
from mtlkit.metrics._normals import NormalsMeter, angular_error
from mtlkit.metrics._regression import AccuracyMeter, RegressionMeter
from mtlkit.metrics._saliency import SaliencyMeter, f_measure
from mtlkit.metrics._segmentation import SegmentationMeter, confusion_matrix, iou_per_class, mean_iou

__all__ = [
    "AccuracyMeter",
    "BSDSEdgeMeter",
    "DepthMeter",
    "EdgeMeter",
    "Meter",
    "NormalsMeter",
    "RegressionMeter",
    "SaliencyMeter",
    "SegmentationMeter",
    "angular_error",
    "bsds_counts",
    "confusion_matrix",
    "correspond_count",
    "delta_m",
    "f_measure",
    "iou_per_class",
    "mean_iou",
    "relative_gain",
    "tolerance_counts",
]
