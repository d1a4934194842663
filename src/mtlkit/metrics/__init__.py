"""Metrics accumulated over whole splits: the dense ones as the papers' evaluation code computes them, the
generic ones (classification, binary, multi-label, regression) on torchmetrics."""

from mtlkit.metrics._base import Meter
from mtlkit.metrics._classification import BinaryMeter, ClassificationMeter, MultilabelMeter
from mtlkit.metrics._delta_m import delta_m, relative_gain
from mtlkit.metrics._depth import DepthMeter
from mtlkit.metrics._edge import EdgeMeter, tolerance_counts
from mtlkit.metrics._edge_bsds import BSDSEdgeMeter, bsds_counts, bsds_split_counts, correspond_count, ods_from_counts
from mtlkit.metrics._generic_regression import GenericRegressionMeter
from mtlkit.metrics._normals import NormalsMeter, angular_error
from mtlkit.metrics._regression import AccuracyMeter, RegressionMeter
from mtlkit.metrics._saliency import SaliencyMeter, f_measure
from mtlkit.metrics._segmentation import SegmentationMeter, confusion_matrix, iou_per_class, mean_iou
from mtlkit.metrics._torchmetrics import TorchMetricsMeter

__all__ = [
    "AccuracyMeter",
    "BSDSEdgeMeter",
    "BinaryMeter",
    "ClassificationMeter",
    "DepthMeter",
    "EdgeMeter",
    "GenericRegressionMeter",
    "Meter",
    "MultilabelMeter",
    "NormalsMeter",
    "RegressionMeter",
    "SaliencyMeter",
    "SegmentationMeter",
    "TorchMetricsMeter",
    "angular_error",
    "bsds_counts",
    "bsds_split_counts",
    "confusion_matrix",
    "correspond_count",
    "ods_from_counts",
    "delta_m",
    "f_measure",
    "iou_per_class",
    "mean_iou",
    "relative_gain",
    "tolerance_counts",
]
