"""Tiny models and random batches for the DTME tests (a 4-block, 32-dim ViT on 16x16 images: 5 tokens)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mtlkit.models import build_model
from mtlkit.tasks import make_task


def tiny_tasks(n: int = 3) -> dict:
    tasks = {"semseg": make_task("semseg", num_classes=3), "depth": make_task("depth"), "normals": make_task("normals")}
    return dict(list(tasks.items())[:n])


def tiny_model(tasks: dict, head: str = "linear", seed: int = 0, depth: int = 4):
    torch.manual_seed(seed)
    return build_model("micro", tasks, 16, head=head, embed_dim=32, depth=depth, num_heads=2)


def random_batch(b: int = 4, size: int = 16, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randn(b, 3, size, size, generator=g),
        "semseg": torch.randint(0, 3, (b, size, size), generator=g),
        "depth": torch.rand(b, 1, size, size, generator=g) + 0.1,
        "normals": F.normalize(torch.randn(b, 3, size, size, generator=g), dim=1),
    }
