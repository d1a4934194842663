"""Cost of an expansion: parameter overhead, inference time and FLOPs per image (DESIGN.md §6.9).

The paper's "+13.4% inference time per task" (ViT-B, Sec. 5.2 / App. D) has two readings, both reported:

- amortised (``..._per_task_pct``): one batched pass for all T tasks, expanded vs unexpanded, the
  extra cost divided by T: (ratio − 1) / T;
- single task (``..._single_task_pct``): ``model(x, tasks=[t])``, which runs only task t's stream, expanded
  vs unexpanded, averaged over the tasks: ratio_t − 1.

Each in wall-clock time (median of a few passes) and in FLOPs (``torch.utils.flop_counter``, which counts
matrix products, convolutions and attention; 2 FLOPs per multiply-add).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn

from mtlkit.dtme._calibrate import synchronize


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def overhead_pct(before: int, after: int) -> float:
    """Added parameters in % of the unexpanded model's (backbone + heads), as the paper reports it."""
    return 100.0 * (after - before) / before if before else 0.0


def _call(model: nn.Module, images: torch.Tensor, tasks: Sequence[str] | None) -> None:
    model(images) if tasks is None else model(images, tasks=list(tasks))


@torch.no_grad()
def inference_seconds(
    model: nn.Module, images: torch.Tensor, repeats: int = 3, warmup: int = 1, tasks: Sequence[str] | None = None
) -> float:
    """Median wall time per image of ``model(images)`` (or of ``tasks``' streams) in eval mode (restored)."""
    was_training = model.training
    model.eval()
    try:
        for _ in range(warmup):
            _call(model, images, tasks)
        times = []
        for _ in range(repeats):
            synchronize(images.device)
            t0 = time.perf_counter()
            _call(model, images, tasks)
            synchronize(images.device)
            times.append(time.perf_counter() - t0)
    finally:
        model.train(was_training)
    return statistics.median(times) / images.shape[0]


@torch.no_grad()
def forward_flops(model: nn.Module, images: torch.Tensor, tasks: Sequence[str] | None = None) -> float:
    """FLOPs per image of one eval-mode ``model(images)`` (or of ``tasks``' streams), by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            _call(model, images, tasks)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / images.shape[0]


def measure_inference(
    model: nn.Module, images: torch.Tensor, tasks: Sequence[str], timing: bool = True
) -> dict[str, float | dict[str, float]]:
    """Seconds (all tasks) and FLOPs (all tasks and each task alone) per image of ``model`` on ``images``."""
    out: dict[str, float | dict[str, float]] = {
        "flops": forward_flops(model, images),
        "flops_by_task": {t: forward_flops(model, images, [t]) for t in tasks},
    }
    if timing:
        out["seconds"] = inference_seconds(model, images)
    return out


def inference_report(before: dict, after: dict, num_tasks: int) -> dict[str, float]:
    """Both readings of the inference overhead, from :func:`measure_inference` before and after expansion."""
    rep: dict[str, float] = {
        "inference_flops_per_image_before": before["flops"],
        "inference_flops_per_image_after": after["flops"],
    }
    ratio = after["flops"] / before["flops"] if before["flops"] else float("nan")
    single = [after["flops_by_task"][t] / before["flops_by_task"][t] for t in before["flops_by_task"]]
    rep["inference_flops_ratio"] = ratio
    rep["inference_flops_overhead_per_task_pct"] = 100.0 * (ratio - 1.0) / num_tasks
    rep["inference_flops_overhead_single_task_pct"] = 100.0 * (statistics.mean(single) - 1.0)
    if "seconds" in before and "seconds" in after:
        s_ratio = after["seconds"] / before["seconds"] if before["seconds"] > 0 else float("nan")
        rep.update({
            "inference_s_per_image_before": before["seconds"],
            "inference_s_per_image_after": after["seconds"],
            "inference_ratio": s_ratio,
            "inference_overhead_per_task_pct": 100.0 * (s_ratio - 1.0) / num_tasks,
        })
    return rep
