"""MultiTaskModel: a shared backbone and one head per task, with a clear shared / task-specific split."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

Features = list[torch.Tensor] | dict[str, list[torch.Tensor]]


class MultiTaskModel(nn.Module):
    """``backbone(x)`` gives multi-layer features; ``heads[t]`` turns them into task t's prediction.

    The backbone may return one shared feature list, or a dict ``{task: features}`` once it forks into
    per-task streams (DTME). A backbone that owns task-specific parameters (DTME modulators / tokens,
    Recon's task-specific layers) lists them with ``task_specific_parameters(task)``; they then count as
    task parameters, not shared ones.
    """

    def __init__(self, backbone: nn.Module, heads: dict[str, nn.Module], output_size: tuple[int, int]) -> None:
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(heads)
        self.output_size = tuple(output_size)

    @property
    def tasks(self) -> list[str]:
        return list(self.heads.keys())

    def forward_features(self, x: torch.Tensor, tasks: Iterable[str] | None = None) -> Features:
        """Backbone features; a backbone with per-task streams (``accepts_tasks``) runs only ``tasks``' ones."""
        if tasks is not None and getattr(self.backbone, "accepts_tasks", False):
            return self.backbone(x, tasks=list(tasks))
        return self.backbone(x)

    def forward_heads(self, feats: Features, tasks: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        names = self.tasks if tasks is None else list(tasks)
        out = {}
        for t in names:
            f = feats[t] if isinstance(feats, dict) else feats
            out[t] = self.heads[t](f, self.output_size)
        return out

    def forward(
        self, x: torch.Tensor, tasks: Iterable[str] | None = None, return_features: bool = False
    ) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], Features]:
        tasks = None if tasks is None else list(tasks)
        feats = self.forward_features(x, tasks)
        out = self.forward_heads(feats, tasks)
        return (out, feats) if return_features else out

    # ---------------------------------------------------------------- parameter split
    def _backbone_task_parameters(self, task: str) -> list[nn.Parameter]:
        fn = getattr(self.backbone, "task_specific_parameters", None)
        return list(fn(task)) if fn is not None else []

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Parameters only task ``task`` uses: its head and any task-specific backbone parameters."""
        return list(self.heads[task].parameters()) + self._backbone_task_parameters(task)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Trainable backbone parameters shared by all tasks (excludes every task-specific backbone parameter
        and frozen ones, e.g. a backbone frozen after DTME expansion)."""
        specific = {id(p) for t in self.tasks for p in self._backbone_task_parameters(t)}
        return [p for p in self.backbone.parameters() if id(p) not in specific and p.requires_grad]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The last shared layer (AvgNorm's default gradient source); all shared ones if unknown."""
        fn = getattr(self.backbone, "last_layer_parameters", None)
        specific = {id(p) for t in self.tasks for p in self._backbone_task_parameters(t)}
        params = list(fn()) if fn is not None else self.shared_parameters()
        return [p for p in params if id(p) not in specific and p.requires_grad]
