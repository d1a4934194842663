"""Shared base of the real dense datasets: task selection, split lists, ATRC transforms per split."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mtlkit.data._base import SPLITS, MultiTaskDataset
from mtlkit.data.transforms import Sample, as_size, eval_transform, sample_rng, train_transform
from mtlkit.errors import MtlkitError


def select_tasks(dataset: str, available: Sequence[str], tasks: Sequence[str] | None) -> tuple[str, ...]:
    """``tasks`` in the dataset's canonical order; an unknown task is an error listing the valid ones."""
    if tasks is None:
        return tuple(available)
    tasks = [str(t) for t in tasks]
    unknown = [t for t in tasks if t not in available]
    if unknown:
        raise MtlkitError(f"{dataset} has no task {', '.join(map(repr, unknown))}; its tasks: {', '.join(available)}")
    if not tasks:
        raise MtlkitError(f"{dataset}: choose at least one task of {', '.join(available)}")
    return tuple(t for t in available if t in tasks)


#: options every dense dataset accepts (``--dataset-opt key=value``), see :class:`DenseDataset`
DENSE_OPTIONS = ("scale_range", "colour_jitter", "flip", "cat_max_ratio", "edge_protocol", "edge_thresholds",
                 "edge_workers")


def check_options(dataset: str, options: dict[str, Any], accepted: Sequence[str]) -> None:
    """An unknown dataset option is an error listing the valid ones (not a TypeError deep in a constructor)."""
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise MtlkitError(f"{dataset} has no option {', '.join(unknown)}; its options: {', '.join(sorted(accepted))}")


def _workers(value: Any) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = -1
    if isinstance(value, bool) or n < 0:
        raise MtlkitError(f"edge_workers must be an integer >= 0 (0 = in-process), got {value!r}; "
                          "e.g. --dataset-opt edge_workers=4")
    return n


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise MtlkitError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


class DenseDataset(MultiTaskDataset):
    """A split of a real dense dataset; subclasses implement :meth:`load` (raw numpy sample of one index)."""

    def __init__(
        self,
        split: str,
        root: Path,
        ids: list[str],
        tasks: tuple[str, ...],
        image_size: int | Sequence[int],
        augment: bool | None = None,
        scale_range: tuple[float, float] = (0.5, 2.0),
        colour_jitter: bool = True,
        flip: bool = True,
        cat_max_ratio: float = 0.75,
        edge_protocol: str = "bsds",
        edge_thresholds: int | None = None,
        edge_workers: int | None = None,
    ) -> None:
        check_split(split)
        self.split = split
        self.root = root
        self.ids = ids
        self.task_names = tasks
        self.image_size = as_size(image_size)
        self.augment = split == "train" if augment is None else bool(augment)
        self.aug_options: dict[str, Any] = dict(
            scale_range=tuple(scale_range), cat_max_ratio=cat_max_ratio, flip=flip, colour=colour_jitter
        )
        self.edge_options: dict[str, Any] = {"protocol": edge_protocol}
        if edge_thresholds is not None:
            self.edge_options["num_thresholds"] = int(edge_thresholds)
        # None: the meter's auto mode (worker processes for full-size images); 0: in-process
        self.edge_options["workers"] = None if edge_workers is None else _workers(edge_workers)

    def edge_params(self, max_dist: float) -> dict[str, Any]:
        """Parameters of the ``edge`` task: the dataset's maxDist and the chosen evaluation protocol.

        Options ``edge_protocol`` (``bsds`` | ``tolerance``), ``edge_thresholds`` (default: seism's 99) and
        ``edge_workers`` (processes for the BSDS matching; default: one per CPU, up to 8, for full-size
        images; 0 = in-process; the numbers are identical) trade exactness for evaluation time.
        """
        return {"max_dist": max_dist, **self.edge_options}

    def __len__(self) -> int:
        return len(self.ids)

    def load(self, index: int) -> Sample:  # pragma: no cover - abstract
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.load(index)
        if self.augment:
            return train_transform(sample, self.image_size, sample_rng(), **self.aug_options)
        return eval_transform(sample, self.image_size)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split!r}, n={len(self)}, tasks={list(self.task_names)})"
