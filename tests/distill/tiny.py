"""A tiny conv multi-task model and single-task teachers for the distillation tests (CPU, milliseconds)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.models import LinearHead, MultiTaskModel

TASKS = ("semseg", "depth")
OUT = {"semseg": 3, "depth": 1}


class TinyBackbone(nn.Module):
    """Two feature maps (8 ch at 16x16, 12 ch at 8x8), with BatchNorm (running statistics) and dropout (global
    RNG), so that the tests see any statistics update or random draw."""

    def __init__(self, c1: int = 8, c2: int = 12, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, c1, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, stride=2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = F.relu(self.bn1(self.conv1(x)))
        f2 = self.drop(F.relu(self.conv2(f1)))
        return [f1, f2]


def tiny_model(tasks=TASKS, dropout: float = 0.0, c2: int = 12) -> MultiTaskModel:
    heads = {t: LinearHead([8, c2], OUT[t]) for t in tasks}
    return MultiTaskModel(TinyBackbone(c2=c2, dropout=dropout), heads, (16, 16))


def task_losses(out: dict[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Learnable targets from the image: class of the argmax channel, mean intensity as depth."""
    losses = {}
    if "semseg" in out:
        losses["semseg"] = F.cross_entropy(out["semseg"], x.argmax(1))
    if "depth" in out:
        losses["depth"] = F.l1_loss(out["depth"], x.mean(1, keepdim=True))
    return losses


def state_bytes(module: nn.Module) -> dict[str, bytes]:
    return {k: v.detach().cpu().numpy().tobytes() for k, v in module.state_dict().items()}
