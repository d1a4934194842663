"""Dataset registry: ``--dataset NAME`` maps to a builder ``(split, **options) -> MultiTaskDataset``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mtlkit._registry import Registry
from mtlkit.data._base import SPLITS, MultiTaskDataset
from mtlkit.errors import MtlkitError

DatasetBuilder = Callable[..., MultiTaskDataset]
DATASETS: Registry[DatasetBuilder] = Registry("dataset")


def build_dataset(name: str, split: str, **options: Any) -> MultiTaskDataset:
    """Build split ``split`` of dataset ``name``; unknown names list the valid ones."""
    builder = DATASETS.get(name)
    if split not in SPLITS:
        raise MtlkitError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return builder(split, **options)
