"""Evaluation over a whole split: meters accumulate pooled statistics, reduced across processes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from mtlkit.engine._batch import to_device
from mtlkit.engine._distributed import reduce_tensors
from mtlkit.models.protocol import run_model

__all__ = ["evaluate", "to_device"]


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: Iterable[dict[str, Any]],
    tasks: dict[str, Any],
    device: torch.device | str = "cpu",
    input_key: str = "image",
) -> dict[str, Any]:
    """``{"tasks": {task: {metric: value}}, "primary": {task: value}}`` over everything ``loader`` yields
    (dict batches with the inputs under ``input_key`` and one target per task)."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    meters = {t: task.meter() for t, task in tasks.items()}
    for batch in loader:
        batch = to_device(batch, device)
        out, _ = run_model(model, batch[input_key], list(tasks))
        for t, m in meters.items():
            m.update(out[t].float(), batch[t])
    for m in meters.values():
        state = getattr(m, "state", None)
        if callable(state):
            reduce_tensors(state())
    model.train(was_training)
    results = {t: m.compute() for t, m in meters.items()}
    return {"tasks": results, "primary": {t: results[t][tasks[t].primary] for t in tasks}}
