"""Evaluation over a whole split: meters accumulate pooled statistics, reduced across processes."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from mtlkit.engine._distributed import reduce_tensors


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, tasks: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """``{"tasks": {task: {metric: value}}, "primary": {task: value}}`` over everything ``loader`` yields."""
    was_training = model.training
    model.eval()
    meters = {t: task.meter() for t, task in tasks.items()}
    for batch in loader:
        batch = to_device(batch, device)
        out = model(batch["image"], tasks=list(tasks))
        for t, m in meters.items():
            m.update(out[t].float(), batch[t])
    for m in meters.values():
        reduce_tensors(m.state())
    model.train(was_training)
    results = {t: m.compute() for t, m in meters.items()}
    return {"tasks": results, "primary": {t: results[t][tasks[t].primary] for t in tasks}}
