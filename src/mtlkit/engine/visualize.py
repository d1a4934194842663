"""``predictions.png``: inputs, predictions and ground truth of a few test images, one row per image."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mtlkit.data import denormalize_image  # noqa: E402
from mtlkit.models.protocol import run_model  # noqa: E402


def _show(ax: Any, task: Any, value: torch.Tensor, is_target: bool) -> None:
    v = value.detach().float().cpu()
    if task.display == "labels":
        arr = v.numpy().astype(np.int64) if is_target else v.numpy()
        arr = np.ma.masked_equal(arr, 255)
        ax.imshow(arr, cmap="tab20", vmin=0, vmax=max(task.channels - 1, 1), interpolation="nearest")
    elif task.display == "normals":
        ax.imshow(((v.permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1))
    elif task.display == "prob":
        arr = v[0].numpy()
        ax.imshow(np.ma.masked_equal(arr, 255) if is_target else arr, cmap="gray", vmin=0, vmax=1)
    elif v.dim() >= 2:
        arr = v[0].numpy() if v.dim() == 3 else v.numpy()
        ax.imshow(np.ma.masked_less_equal(arr, 0) if task.display == "depth" else arr, cmap="viridis")
    ax.set_xticks([])
    ax.set_yticks([])


def _is_image_batch(x: Any) -> bool:
    return torch.is_tensor(x) and x.dim() == 4 and x.shape[1] in (1, 3)


@torch.no_grad()
def save_predictions(
    model: torch.nn.Module, batch: dict[str, Any], tasks: dict[str, Any], path: str | Path, n: int = 4,
    input_key: str = "image",
) -> Path | None:
    """Write a grid (image | prediction / ground truth per dense task) for the first ``n`` samples.

    Only tasks that have a picture are drawn (dense tasks on image inputs); when none has, nothing is
    written and None is returned.
    """
    images = batch[input_key]
    dense = [t for t in tasks if getattr(tasks[t], "kind", "") == "dense"]
    if not _is_image_batch(images) or not dense:
        return None
    model.eval()
    images = images[:n]
    out, _ = run_model(model, images, list(tasks))
    cols = 1 + 2 * len(dense)
    fig, axes = plt.subplots(len(images), cols, figsize=(1.8 * cols, 1.8 * len(images)), squeeze=False)
    for i in range(len(images)):
        img = images[i].cpu()
        img = denormalize_image(img) if img.shape[0] == 3 else img.repeat(3, 1, 1)
        axes[i, 0].imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        axes[i, 0].set_xticks([])
        axes[i, 0].set_yticks([])
        for j, t in enumerate(dense):
            pred = tasks[t].postprocess(out[t][i : i + 1])[0]
            _show(axes[i, 1 + 2 * j], tasks[t], pred, False)
            _show(axes[i, 2 + 2 * j], tasks[t], batch[t][i], True)
            if i == 0:
                axes[0, 1 + 2 * j].set_title(f"{t} pred", fontsize=8)
                axes[0, 2 + 2 * j].set_title(f"{t} gt", fontsize=8)
    axes[0, 0].set_title("image", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
