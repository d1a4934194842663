"""A small tabular multi-task problem for engine tests: 2 classification tasks + 1 regression task on
learnable synthetic rows, a user MLP (SharedBottom) and minimal generic tasks (kept here, not in src)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtlkit import Task
from mtlkit.metrics import AccuracyMeter, RegressionMeter
from mtlkit.models import SharedBottom

FEATURES = 8


def classification(name: str, classes: int) -> Task:
    return Task(name, classes, lambda p, t: F.cross_entropy(p, t.long()), AccuracyMeter, "accuracy", True,
                kind="classification", display="labels")


def regression(name: str) -> Task:
    return Task(name, 1, lambda p, t: F.mse_loss(p.reshape(t.shape), t), RegressionMeter, "rmse", False,
                kind="regression", display="regression")


TASKS = {"income": classification("income", 2), "married": classification("married", 3), "age": regression("age")}


class Rows(torch.utils.data.Dataset):
    """Rows x ~ N(0, 1); income = x0 + x1 > 0, married = bucket of x2 - x3, age = x4 + 0.5 x5 (+ noise)."""

    def __init__(self, n: int, seed: int, as_tuple: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, FEATURES, generator=g)
        self.y = {
            "income": (self.x[:, 0] + self.x[:, 1] > 0).long(),
            "married": torch.bucketize(self.x[:, 2] - self.x[:, 3], torch.tensor([-0.5, 0.5])),
            "age": self.x[:, 4] + 0.5 * self.x[:, 5] + 0.1 * torch.randn(n, generator=g),
        }
        self.as_tuple = as_tuple

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        targets = {t: v[i] for t, v in self.y.items()}
        if self.as_tuple:
            return self.x[i], targets
        return {"features": self.x[i], **targets}


def mlp(tasks, hidden: int = 32) -> SharedBottom:
    names = list(tasks)
    encoder = nn.Sequential(nn.Linear(FEATURES, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
    heads = {t: nn.Linear(hidden, TASKS[t].channels) for t in names}
    return SharedBottom(encoder, heads)
