"""Helpers shared by the balancing tests: a micro multi-task model on random tensors, and toy problems."""

from __future__ import annotations

import torch

from mtlkit import make_task
from mtlkit.models import build_model


def make_tasks() -> dict:
    return {"semseg": make_task("semseg", num_classes=5), "depth": make_task("depth"),
            "normals": make_task("normals"), "edge": make_task("edge")}


def make_model(tasks: dict, seed: int = 0):
    torch.manual_seed(seed)
    return build_model("micro", tasks, 32)


def make_batch(batch: int = 2, size: int = 32, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(batch, 3, size, size, generator=g),
        "semseg": torch.randint(0, 5, (batch, size, size), generator=g),
        "depth": torch.rand(batch, 1, size, size, generator=g) + 0.1,
        "normals": torch.nn.functional.normalize(torch.randn(batch, 3, size, size, generator=g), dim=1),
        "edge": (torch.rand(batch, 1, size, size, generator=g) > 0.8).float(),
    }


def forward_losses(model, tasks, batch):
    out, feats = model(batch["image"], return_features=True)
    return {t: tasks[t].loss(out[t], batch[t]) for t in tasks}, feats


def linear_losses(rows: torch.Tensor, names=None):
    """Losses L_t = a_t · θ on one shared parameter θ (at 0): their gradients are exactly the rows a_t."""
    theta = torch.nn.Parameter(torch.zeros(rows.shape[1], dtype=rows.dtype))
    names = names or [f"t{i}" for i in range(rows.shape[0])]
    return theta, {n: rows[i] @ theta for i, n in enumerate(names)}
