"""Dataset registry: ``--dataset NAME`` maps to a builder ``(split, **options) -> MultiTaskDataset``."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from mtlkit._registry import Registry
from mtlkit.data._base import SPLITS, MultiTaskDataset
from mtlkit.data._knobs import KNOB_OPTIONS, apply_knobs
from mtlkit.errors import MtlkitError

DatasetBuilder = Callable[..., MultiTaskDataset]
DATASETS: Registry[DatasetBuilder] = Registry("dataset")


def build_dataset(name: str, split: str, **options: Any) -> MultiTaskDataset:
    """Build split ``split`` of dataset ``name``; unknown names list the valid ones.

    The data-imbalance knobs ``label_noise`` and ``subsample`` (:mod:`mtlkit.data._knobs`) work for every
    dataset: a builder that takes one itself (the synthetic presets' ``label_noise``) gets it, otherwise the
    built train split is wrapped."""
    builder = DATASETS.get(name)
    if split not in SPLITS:
        raise MtlkitError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    own = {p.name for p in inspect.signature(builder).parameters.values() if p.kind is not p.VAR_KEYWORD}
    knobs = {k: options.pop(k) for k in KNOB_OPTIONS if k in options and k not in own}
    ds = builder(split, **options)
    return apply_knobs(ds, split, **knobs) if knobs else ds
