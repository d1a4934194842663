"""Prediction pictures, only for tasks that have one.

- Dense tasks: ``predictions.png``, one row per sample (input | prediction / ground truth per dense task); the
  input is drawn only when it is image-shaped, (3, H, W) or (1, H, W).
- ``classification`` / ``binary`` tasks: a confusion matrix, ``predictions_<task>.png`` beside it.
- ``regression`` tasks: predicted against true values, ``predictions_<task>.png``.
- Others (``multilabel``, a user's kind): no picture.

Inputs of any shape and batches of any form are fine: pass ``inputs`` / ``targets`` (and, to draw a whole split
rather than one batch, ``outputs``) when the batch is not a dict with the input under ``"image"``. A picture
that cannot be drawn is skipped with a warning; drawing never stops a run.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from mtlkit.data import denormalize_image  # noqa: E402


def _show(ax: Any, task: Any, value: torch.Tensor, is_target: bool) -> None:
    v = value.detach().float().cpu()
    if task.display == "labels":
        arr = v.numpy().astype(np.int64) if is_target else v.numpy()
        arr = np.ma.masked_equal(arr, 255)
        ax.imshow(arr, cmap="tab20", vmin=0, vmax=max(task.channels - 1, 1), interpolation="nearest")
    elif task.display == "normals":
        ax.imshow(((v.permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1))
    elif task.display == "prob":
        arr = v[0].numpy() if v.dim() == 3 else v.numpy()
        ax.imshow(np.ma.masked_equal(arr, 255) if is_target else arr, cmap="gray", vmin=0, vmax=1)
    elif v.dim() >= 2:
        arr = v[0].numpy() if v.dim() == 3 else v.numpy()
        ax.imshow(np.ma.masked_less_equal(arr, 0) if task.display == "depth" else arr, cmap="viridis")
    ax.set_xticks([])
    ax.set_yticks([])


def _is_image(inputs: Any) -> bool:
    return torch.is_tensor(inputs) and inputs.dim() == 4 and inputs.shape[1] in (1, 3)


def _image(x: torch.Tensor) -> np.ndarray:
    x = x.detach().float().cpu()
    if x.shape[0] == 3:
        return denormalize_image(x).permute(1, 2, 0).numpy().clip(0, 1)
    g = x[0]
    return ((g - g.min()) / (g.max() - g.min()).clamp_min(1e-12)).numpy()


def _forward(model: torch.nn.Module, inputs: Any, tasks: Mapping[str, Any]) -> Mapping[str, torch.Tensor]:
    """``model(inputs, tasks=[...])`` when its forward takes ``tasks`` (mtlkit's models), else ``model(inputs)``;
    in eval mode, the model's mode restored after."""
    was_training = model.training
    model.eval()
    try:
        if "tasks" in inspect.signature(model.forward).parameters:
            return model(inputs, tasks=list(tasks))
        return model(inputs)
    finally:
        model.train(was_training)


def _dense_grid(
    inputs: Any, tasks: Mapping[str, Any], dense: list[str], outputs: Mapping[str, torch.Tensor],
    targets: Mapping[str, Any], path: Path, n: int,
) -> Path | None:
    image = _is_image(inputs)
    if not dense and not image:
        return None
    rows = min(n, len(inputs) if image else len(outputs[dense[0]]))
    cols = int(image) + 2 * len(dense)
    fig, axes = plt.subplots(rows, cols, figsize=(1.8 * cols, 1.8 * rows), squeeze=False)
    try:
        _draw_rows(axes, inputs, tasks, dense, outputs, targets, rows, image)
    except Exception:
        plt.close(fig)
        raise
    return _save(fig, path)


def _draw_rows(
    axes: Any, inputs: Any, tasks: Mapping[str, Any], dense: list[str], outputs: Mapping[str, torch.Tensor],
    targets: Mapping[str, Any], rows: int, image: bool,
) -> None:
    for i in range(rows):
        if image:
            axes[i, 0].imshow(_image(inputs[i]), cmap="gray")
            axes[i, 0].set_xticks([])
            axes[i, 0].set_yticks([])
        for j, t in enumerate(dense):
            c = int(image) + 2 * j
            _show(axes[i, c], tasks[t], tasks[t].postprocess(outputs[t][i : i + 1])[0], False)
            if t in targets:
                _show(axes[i, c + 1], tasks[t], targets[t][i], True)
            else:
                axes[i, c + 1].axis("off")
            if i == 0:
                axes[0, c].set_title(f"{t} pred", fontsize=8)
                axes[0, c + 1].set_title(f"{t} gt", fontsize=8)
    if image:
        axes[0, 0].set_title("image", fontsize=8)


def confusion(task: Any, pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    """``cm[true, predicted]`` counts of a ``classification`` (argmax of C logits) or ``binary`` task (sigmoid
    above the task's ``threshold``, 0.5 by default); targets outside the classes (``ignore_index``) are skipped."""
    pred = pred.detach().float().cpu()
    if task.kind == "binary":
        classes = 2
        labels = (pred.reshape(-1).sigmoid() > task.params.get("threshold", 0.5)).long()
    else:
        classes = task.channels
        labels = (pred.movedim(1, -1) if pred.dim() > 2 else pred).reshape(-1, classes).argmax(-1)
    truth = target.detach().cpu().long().reshape(-1)
    if truth.numel() != labels.numel():
        raise ValueError(f"{labels.numel()} predictions for {truth.numel()} targets")
    keep = (truth >= 0) & (truth < classes)
    idx = truth[keep] * classes + labels[keep]
    return torch.bincount(idx, minlength=classes**2).reshape(classes, classes).numpy()


def _save(fig: Any, path: Path) -> Path:
    try:
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path


def _confusion_png(name: str, task: Any, pred: torch.Tensor, target: torch.Tensor, path: Path) -> Path | None:
    cm = confusion(task, pred, target)
    total = int(cm.sum())
    if not total:
        return None
    k = len(cm)
    size = min(2.5 + 0.35 * k, 12)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    if k <= 20:
        for (r, c), v in np.ndenumerate(cm):
            ax.text(c, r, str(v), ha="center", va="center", fontsize=8,
                    color="white" if v > cm.max() / 2 else "black")
    ticks = range(k) if k <= 30 else []
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{name}: {total} samples, accuracy {np.trace(cm) / total:.3f}", fontsize=9)
    return _save(fig, path)


def _scatter_png(name: str, task: Any, pred: torch.Tensor, target: torch.Tensor, path: Path) -> Path | None:
    y = target.detach().double().cpu()
    k = max(task.channels, 1)
    y = y.reshape(-1, k)
    p = pred.detach().double().cpu().reshape(y.shape)
    valid = torch.isfinite(y)
    if not valid.any():
        return None
    fig, ax = plt.subplots(figsize=(4, 4))
    for j in range(k):
        keep = valid[:, j]
        ax.scatter(y[keep, j].numpy(), p[keep, j].numpy(), s=8, alpha=0.6, label=f"output {j}" if k > 1 else None)
    lo, hi = float(min(y[valid].min(), p[valid].min())), float(max(y[valid].max(), p[valid].max()))
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8)  # y = x: a perfect prediction
    if 1 < k <= 10:
        ax.legend(fontsize=7)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(f"{name}: {int(valid.sum())} values", fontsize=9)
    return _save(fig, path)


_PER_TASK = {"classification": _confusion_png, "binary": _confusion_png, "regression": _scatter_png}


@torch.no_grad()
def save_predictions(
    model: torch.nn.Module | None,
    batch: Mapping[str, Any] | None,
    tasks: Mapping[str, Any],
    path: str | Path,
    n: int = 4,
    *,
    inputs: Any = None,
    targets: Mapping[str, Any] | None = None,
    outputs: Mapping[str, torch.Tensor] | None = None,
    input_key: str = "image",
) -> list[Path]:
    """Draw the pictures of the tasks that have one (module docstring); returns the files written.

    ``batch``: a dict with the input under ``input_key`` and targets under task names, or ``None`` when
    ``inputs`` and ``targets`` are given (e.g. from an ``(inputs, targets)`` batch). ``outputs``: the raw
    head outputs when already computed (then ``model`` is not called and may be ``None``); confusion matrices
    and scatters use every sample given, the dense grid the first ``n``.
    """
    if inputs is None and batch is not None:
        inputs = batch.get(input_key)
    if targets is None:
        targets = {t: batch[t] for t in tasks if batch is not None and t in batch}
    if outputs is None:
        if model is None or inputs is None:
            raise ValueError("save_predictions needs outputs, or a model and inputs")
        outputs = _forward(model, inputs, tasks)
    path = Path(path)
    written: list[Path] = []
    dense = [t for t in tasks if getattr(tasks[t], "kind", "dense") == "dense" and t in outputs
             and outputs[t].dim() == 4]
    try:
        grid = _dense_grid(inputs, tasks, dense, outputs, targets, path, n)
        written += [grid] if grid else []
    except (ValueError, RuntimeError, IndexError, TypeError) as e:
        warnings.warn(f"predictions picture {path.name} skipped: {e}", stacklevel=2)
    for t, task in tasks.items():
        draw = _PER_TASK.get(getattr(task, "kind", "dense"))
        if draw is None or t not in outputs or t not in targets:
            continue
        file = path.with_name(f"{path.stem}_{t}{path.suffix}")
        try:
            out = draw(t, task, outputs[t], targets[t], file)
            written += [out] if out else []
        except (ValueError, RuntimeError, IndexError, TypeError) as e:
            warnings.warn(f"predictions picture {file.name} skipped: {e}", stacklevel=2)
    return written
