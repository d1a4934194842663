"""Datasets: the built-in synthetic scenes and loaders for the real benchmarks, all behind one registry."""

from mtlkit.data._base import (
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SPLITS,
    MultiTaskDataset,
    denormalize_image,
    normalize_image,
)
from mtlkit.data._check import CHECKERS, Problem, check_dataset, format_problems
from mtlkit.data._registry import DATASETS, build_dataset

# Dataset modules register themselves on import.
from mtlkit.data import synthetic  # noqa: E402,F401  isort: skip
from mtlkit.data import multimnist, nyud, pascal_context, taskonomy  # noqa: E402,F401  isort: skip

__all__ = [
    "CHECKERS",
    "DATASETS",
    "IGNORE_INDEX",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SPLITS",
    "MultiTaskDataset",
    "Problem",
    "build_dataset",
    "check_dataset",
    "denormalize_image",
    "format_problems",
    "normalize_image",
]
