"""Multi-task models: :class:`SharedBottom` (any encoder + one head per task) and :class:`MultiTaskModel`,
its dense specialisation (a ViT backbone whose multi-layer features go to dense heads at the input size).

Both implement :class:`mtlkit.models.MultiTaskProtocol`: a clear shared / task-specific parameter split, the
last shared layer (AvgNorm's default gradient source) and ``forward_features`` / ``forward_heads`` (the
shared representation, for methods that work on it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

Features = Any  # a tensor, a list of tensors, or {task: features} once the backbone forks per task (DTME)


class SharedBottom(nn.Module):
    """``encoder(x)`` gives the shared representation; ``heads[t]`` turns it into task t's prediction.

    Wraps any encoder (an MLP, a CNN, a timm model) and any heads (``nn.Module`` per task). The encoder may
    own task-specific parameters (DTME modulators, Recon's task copies) and list them with
    ``task_specific_parameters(task)``; they then count as task parameters, not shared ones. An encoder with
    ``last_layer_parameters()`` names its last layer; otherwise the last sub-module holding parameters is.
    """

    def __init__(self, encoder: nn.Module, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.backbone = encoder  # the attribute name keeps MultiTaskModel's state-dict keys ("backbone.*")
        self.heads = nn.ModuleDict(dict(heads))

    @property
    def encoder(self) -> nn.Module:
        return self.backbone

    @property
    def tasks(self) -> list[str]:
        return list(self.heads.keys())

    def forward_features(self, x: Any, tasks: Iterable[str] | None = None) -> Features:
        """Encoder features; an encoder with per-task streams (``accepts_tasks``, e.g. DTME) runs only ``tasks``'."""
        if tasks is not None and getattr(self.backbone, "accepts_tasks", False):
            return self.backbone(x, tasks=list(tasks))
        return self.backbone(x)

    def _head(self, task: str, feats: Features) -> torch.Tensor:
        return self.heads[task](feats)

    def forward_heads(self, feats: Features, tasks: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        names = self.tasks if tasks is None else list(tasks)
        return {t: self._head(t, feats[t] if isinstance(feats, dict) else feats) for t in names}

    def forward(
        self, x: Any, tasks: Iterable[str] | None = None, return_features: bool = False
    ) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], Features]:
        tasks = None if tasks is None else list(tasks)
        feats = self.forward_features(x, tasks)
        out = self.forward_heads(feats, tasks)
        return (out, feats) if return_features else out

    # ---------------------------------------------------------------- parameter split
    def _backbone_task_parameters(self, task: str) -> list[nn.Parameter]:
        fn = getattr(self.backbone, "task_specific_parameters", None)
        return list(fn(task)) if fn is not None else []

    def _specific_ids(self) -> set[int]:
        return {id(p) for t in self.tasks for p in self._backbone_task_parameters(t)}

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Parameters only task ``task`` uses: its head and any task-specific encoder parameters."""
        return list(self.heads[task].parameters()) + self._backbone_task_parameters(task)

    def shared_parameters(self) -> list[nn.Parameter]:
        """Trainable encoder parameters shared by all tasks (excludes task-specific encoder parameters and
        frozen ones, e.g. a backbone frozen after DTME expansion)."""
        specific = self._specific_ids()
        return [p for p in self.backbone.parameters() if id(p) not in specific and p.requires_grad]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The last shared layer: the encoder's ``last_layer_parameters()`` if it has one, else the last
        sub-module (in registration order) that holds trainable shared parameters."""
        specific = self._specific_ids()
        fn = getattr(self.backbone, "last_layer_parameters", None)
        if fn is not None:
            params = list(fn())
        else:
            params = []
            for mod in reversed(list(self.backbone.modules())):
                own = [p for p in mod.parameters(recurse=False) if p.requires_grad and id(p) not in specific]
                if own:
                    params = own
                    break
        return [p for p in params if id(p) not in specific and p.requires_grad]


class MultiTaskModel(SharedBottom):
    """Dense specialisation of :class:`SharedBottom`: ``backbone(x)`` gives multi-layer features and each
    head is called as ``heads[t](features, output_size)`` (dense predictions at the input resolution)."""

    def __init__(self, backbone: nn.Module, heads: dict[str, nn.Module], output_size: tuple[int, int]) -> None:
        super().__init__(backbone, heads)
        self.output_size = tuple(output_size)

    def _head(self, task: str, feats: Features) -> torch.Tensor:
        return self.heads[task](feats, self.output_size)

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The last shared layer (AvgNorm's default gradient source); all shared ones if unknown."""
        if getattr(self.backbone, "last_layer_parameters", None) is not None:
            return super().last_shared_parameters()
        return self.shared_parameters()
