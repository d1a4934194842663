"""The dataset contract every loader follows, so tasks, trainer and metrics never special-case a dataset.

A sample is a dict of tensors:

- ``"image"``: float32 (3, H, W), normalised with ImageNet mean / std (``IMAGENET_MEAN`` / ``IMAGENET_STD``).
- ``"semseg"``, ``"parts"``: int64 (H, W) class indices, 255 = ignore.
- ``"depth"``: float32 (1, H, W) in metres, 0 = invalid.
- ``"normals"``: float32 (3, H, W) unit vectors in the camera frame, all-zero = invalid.
- ``"edge"``, ``"saliency"``: float32 (1, H, W) in {0, 1}, 255 = ignore.
- other tasks (Taskonomy, MultiMNIST) document their own encodings in their task factory.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IGNORE_INDEX = 255
SPLITS = ("train", "val", "test")


def normalize_image(image: torch.Tensor) -> torch.Tensor:
    """uint8 or [0, 1] float (3, H, W) -> ImageNet-normalised float32."""
    x = image.float()
    if image.dtype == torch.uint8:
        x = x / 255.0
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype).view(3, 1, 1)
    return (x - mean) / std


def denormalize_image(image: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize_image`, clamped to [0, 1] (for plots)."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=image.dtype, device=image.device).view(-1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=image.dtype, device=image.device).view(-1, 3, 1, 1)
    out = image.unsqueeze(0) if image.dim() == 3 else image
    out = (out * std + mean).clamp(0, 1)
    return out[0] if image.dim() == 3 else out


class MultiTaskDataset(Dataset):
    """Base class: a split of a multi-task dataset returning the sample dicts described above."""

    #: registry name of the dataset (e.g. ``"synthetic-nyud"``)
    name: str = ""
    #: tasks this split provides labels for, in the dataset's canonical order
    task_names: tuple[str, ...] = ()

    def task_params(self) -> dict[str, dict[str, Any]]:
        """Keyword arguments for :func:`mtlkit.tasks.make_task` per task (e.g. ``num_classes``)."""
        return {}

    def groups(self) -> list[str] | None:
        """The scene (building) of each sample, for datasets made of scans of scenes; ``None`` otherwise.
        The ``subsample`` knob's ``scenes`` / ``scans_per_scene`` use it (:mod:`mtlkit.data._knobs`)."""
        return None

    def make_tasks(self, names: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
        """The :class:`mtlkit.tasks.Task` objects of this dataset (or the subset ``names``)."""
        from mtlkit.tasks import make_task

        params = self.task_params()
        chosen = list(self.task_names) if names is None else list(names)
        return {t: make_task(t, **params.get(t, {})) for t in chosen}
