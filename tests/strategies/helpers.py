"""Test helper (not a test module): a micro multi-task model and batch (4 dense tasks, 16x16 images)."""

from __future__ import annotations

import torch

from mtlkit.models import build_model
from mtlkit.tasks import make_task

TASKS = ("semseg", "depth", "normals", "edge")


def micro_setup(seed: int = 0, batch_size: int = 2, size: int = 16):
    """(tasks, model, batch) with a fixed seed: a 2-block, 32-wide ViT and random targets."""
    torch.manual_seed(seed)
    tasks = {t: make_task(t, num_classes=5) if t == "semseg" else make_task(t) for t in TASKS}
    model = build_model("micro", tasks, size, embed_dim=32, depth=2, num_heads=2)
    g = torch.Generator().manual_seed(seed + 1)
    batch = {
        "image": torch.randn(batch_size, 3, size, size, generator=g),
        "semseg": torch.randint(0, 5, (batch_size, size, size), generator=g),
        "depth": torch.rand(batch_size, 1, size, size, generator=g) + 0.1,
        "normals": torch.nn.functional.normalize(torch.randn(batch_size, 3, size, size, generator=g), dim=1),
        "edge": (torch.rand(batch_size, 1, size, size, generator=g) > 0.8).float(),
    }
    return tasks, model, batch
