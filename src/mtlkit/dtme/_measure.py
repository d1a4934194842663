"""Cost of an expansion: parameter overhead and inference time per image (DESIGN.md §6.9)."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

from mtlkit.dtme._calibrate import synchronize


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def overhead_pct(before: int, after: int) -> float:
    """Added parameters in % of the unexpanded model's (backbone + heads), as the paper reports it."""
    return 100.0 * (after - before) / before if before else 0.0


@torch.no_grad()
def inference_seconds(model: nn.Module, images: torch.Tensor, repeats: int = 3, warmup: int = 1) -> float:
    """Median wall time per image of ``model(images)`` in eval mode (the mode is restored)."""
    was_training = model.training
    model.eval()
    try:
        for _ in range(warmup):
            model(images)
        times = []
        for _ in range(repeats):
            synchronize(images.device)
            t0 = time.perf_counter()
            model(images)
            synchronize(images.device)
            times.append(time.perf_counter() - t0)
    finally:
        model.train(was_training)
    return statistics.median(times) / images.shape[0]


def inference_report(before_s: float, after_s: float, num_tasks: int) -> dict[str, float]:
    """Ratio expanded / unexpanded and the overhead per task ((ratio - 1) / T, the paper's "+13.4% per task")."""
    ratio = after_s / before_s if before_s > 0 else float("nan")
    return {
        "inference_s_per_image_before": before_s,
        "inference_s_per_image_after": after_s,
        "inference_ratio": ratio,
        "inference_overhead_per_task_pct": 100.0 * (ratio - 1.0) / num_tasks,
    }
