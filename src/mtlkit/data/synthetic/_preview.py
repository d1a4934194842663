"""A PNG grid of samples of any registered dataset: rows = samples, columns = image + one per task label."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtlkit.data._base import IGNORE_INDEX, denormalize_image
from mtlkit.errors import MtlkitError


def _class_colors(label: np.ndarray) -> np.ndarray:
    from matplotlib import colormaps

    palette = colormaps["tab20"](np.arange(20))[:, :3]
    rgb = palette[label.astype(np.int64) % 20]
    rgb[label == IGNORE_INDEX] = 0.0
    return rgb


def _panel(task: str, x: torch.Tensor) -> tuple[np.ndarray, dict[str, Any]]:
    """(array, imshow kwargs) for one label."""
    a = x.detach().cpu().numpy()
    if task in ("semseg", "parts") or (a.ndim == 2 and not np.issubdtype(a.dtype, np.floating)):
        return _class_colors(a), {}
    if task == "normals" and a.shape[0] == 3:
        rgb = np.clip((a.transpose(1, 2, 0) + 1.0) / 2.0, 0, 1)
        rgb[np.all(a == 0, axis=0)] = 0.0
        return rgb, {}
    a = a[0] if a.ndim == 3 else a
    if task in ("edge", "saliency"):
        show = np.where(a == IGNORE_INDEX, 0.5, np.clip(a, 0, 1))
        return show, {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
    valid = a > 0 if task == "depth" else np.isfinite(a)
    masked = np.ma.masked_where(~valid, a)
    lo, hi = (float(a[valid].min()), float(a[valid].max())) if valid.any() else (0.0, 1.0)
    return masked, {"cmap": "viridis", "vmin": lo, "vmax": max(hi, lo + 1e-6)}


def preview(
    dataset_name: str, out_path: str | os.PathLike[str], n: int = 4, *, split: str = "val", **options: Any
) -> Path:
    """Write a PNG grid of ``n`` samples of ``split`` of dataset ``dataset_name`` to ``out_path``.

    ``options`` go to the dataset builder (e.g. ``image_size``, ``tasks``, ``cache_dir``). Class maps use the
    tab20 colours (ignored pixels black), depth viridis (invalid blank), normals as RGB (n + 1) / 2,
    edges and saliency grey (ignored pixels mid-grey). Returns the path written.
    """
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, leaves the global backend alone

    from mtlkit.data._registry import build_dataset

    if n < 1:
        raise MtlkitError(f"n must be at least 1, got {n}")
    ds = build_dataset(dataset_name, split, **options)
    n = min(n, len(ds))
    tasks = list(ds.task_names)
    cols = 1 + len(tasks)
    fig = Figure(figsize=(1.8 * cols, 1.8 * n))
    axes = fig.subplots(n, cols, squeeze=False)
    for r in range(n):
        sample = ds[r]
        axes[r, 0].imshow(denormalize_image(sample["image"]).permute(1, 2, 0).numpy())
        for c, task in enumerate(tasks, start=1):
            arr, kw = _panel(task, sample[task])
            axes[r, c].imshow(arr, interpolation="nearest", **kw)
        for c, title in enumerate(["image", *tasks]):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
    fig.suptitle(f"{dataset_name} ({split})", fontsize=10)
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out
