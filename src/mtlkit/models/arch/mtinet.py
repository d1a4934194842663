"""MTI-Net: Multi-scale Task Interaction Networks (Vandenhende, Georgoulis & Van Gool, ECCV 2020).

Follows SimonVandenhende/Multi-Task-Learning-PyTorch ``models/mti_net.py`` (initial task predictions,
feature propagation module), ``models/padnet.py`` (``MultiTaskDistillationModule``), ``models/layers.py``
(SE / SA blocks), ``models/seg_hrnet.py`` (``HighResolutionHead``) and ``losses/loss_schemes.py``
(``MTINetLoss``), configs ``configs/{nyud,pascal}/hrnet18/mti_net.yml`` (HRNet-18 = HRNet-W18-small-v2).

On the backbone's last ``num_scales`` maps (coarse to fine, each twice the resolution of the next):

- scale s (coarsest first): per task, two BasicBlocks refine ``cat(x_s, up(fpm_{s+1}[t]))`` (just ``x_s`` at
  the coarsest) to the scale's width, and a 1x1 conv makes the initial prediction (deep supervision);
- FPM (every scale but the finest): the tasks' features concatenated, a per-task softmax attention over them,
  a BasicBlock down to one task's width, a per-task SE block + the task's own features -> propagated up;
- distillation per scale: task t's features + Σ_{a≠t} SA_{t,a}(features of a);
- head per task: HRNet head over the four distilled scales, upsampled to the input size.

Loss (``MTINetLoss``): total = Σ_t w_t (L_t(out) + Σ_s L_t(deep supervision at s, upsampled to the input)).
So ``task_losses`` gives task t the main term plus its ``num_scales`` deep-supervision terms, each with weight
1 (``aux_weight``); the balancing method's task weight then multiplies them all, as the official w_t does.

Single-task twin (the imbalance study's "MTI-Net Single-task"): the same modules for one task, with the
multi-task distillation turned into self-distillation (``self_distillation``: task t's own SA block on its own
features, f_t + SA_{t,t}(f_t)); it defaults to on for one task and off otherwise.

Where we chose: features propagated from the coarser scale are resized to the current scale's size (the
official code upsamples by exactly 2, the same on HRNet), so any multi-scale CNN works.

Parameter split: task t owns its heads, its initial-prediction convs and its distillation SA blocks (only its
own loss reaches them); the per-task refinements and FPM SE blocks feed every task (through the FPM and the
distillation), so they are shared, with the backbone. Balancing cut: every task's refined features at every
scale (one list all tasks read: MGDA-UB works on it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from mtlkit.errors import MtlkitError
from mtlkit.models.arch._backbone import cnn_last_layer_parameters, out_channels
from mtlkit.models.arch._base import ArchModel, Outputs
from mtlkit.models.arch._blocks import BasicBlock, HRNetHead, SABlock, SEBlock, basic_block, conv_bn, resize_to


class InitialTaskPrediction(nn.Module):
    """Per task: two BasicBlocks to ``channels`` and a 1x1 conv to the task's initial prediction."""

    def __init__(self, tasks: Mapping[str, int], cin: int, channels: int) -> None:
        super().__init__()
        self.refinement = nn.ModuleDict(
            {t: nn.Sequential(basic_block(cin, channels), BasicBlock(channels, channels)) for t in tasks}
        )
        self.decoders = nn.ModuleDict({t: nn.Conv2d(channels, c, 1) for t, c in tasks.items()})

    def forward(
        self, x: torch.Tensor, prev: dict[str, torch.Tensor] | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """-> (features per task, initial prediction per task)."""
        feats, preds = {}, {}
        for t in self.refinement:
            inp = x if prev is None else torch.cat([x, resize_to(prev[t], x.shape[-2:])], dim=1)
            feats[t] = self.refinement[t](inp)
            preds[t] = self.decoders[t](feats[t])
        return feats, preds


class FPM(nn.Module):
    """Feature propagation module: cross-task attention over the concatenated task features."""

    def __init__(self, tasks: list[str], channels: int) -> None:
        super().__init__()
        self.tasks = list(tasks)
        n = len(self.tasks)
        shared = n * channels
        # both projections always exist in the official FPM, even when the widths agree (one task)
        self.non_linear = nn.Sequential(
            BasicBlock(shared, shared // 4, downsample=conv_bn(shared, shared // 4)),
            BasicBlock(shared // 4, shared // 4),
            nn.Conv2d(shared // 4, shared, 1),
        )
        self.dimensionality_reduction = BasicBlock(shared, channels, downsample=conv_bn(shared, channels))
        self.se = nn.ModuleDict({t: SEBlock(channels) for t in self.tasks})

    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        n = len(self.tasks)
        concat = torch.cat([feats[t] for t in self.tasks], dim=1)
        b, c, h, w = concat.shape
        mask = torch.softmax(self.non_linear(concat).view(b, c // n, n, h, w), dim=2)
        # the official view (B, C/N, N, H, W) of the task-major concatenation, kept as is
        shared = (mask * concat.view(b, c // n, n, h, w)).view(b, c, h, w)
        shared = self.dimensionality_reduction(shared)
        return {t: self.se[t](shared) + feats[t] for t in self.tasks}


class Distillation(nn.Module):
    """Multi-task distillation at one scale: f_t + Σ_a SA_{t,a}(f_a) over the other tasks (or t itself)."""

    def __init__(self, tasks: list[str], channels: int, self_distillation: bool) -> None:
        super().__init__()
        self.sources = {t: [a for a in tasks if a != t or self_distillation] for t in tasks}
        self.self_attention = nn.ModuleDict(
            {t: nn.ModuleDict({a: SABlock(channels, channels) for a in src}) for t, src in self.sources.items()}
        )

    def forward(self, feats: dict[str, torch.Tensor], tasks: list[str]) -> dict[str, torch.Tensor]:
        out = {}
        for t in tasks:
            y = feats[t]
            for a in self.sources[t]:
                y = y + self.self_attention[t][a](feats[a])
            out[t] = y
        return out


class MTINet(ArchModel):
    """MTI-Net on the last ``num_scales`` maps of a multi-scale CNN (HRNet-18 in the paper).

    Args:
        backbone: a multi-scale CNN (timm ``features_only``; e.g. ``hrnet_w18_small_v2`` with
            ``feature_location=""`` gives the raw HRNet branches 18/36/72/144 of the official code).
        tasks: ``{task: output channels}``.
        num_scales: scales used (4 as published); each must be twice the resolution of the next.
        self_distillation: distil a task from its own features too (default: only with one task).
    """

    arch = "mtinet"
    shared_cut = True

    def __init__(
        self,
        backbone: nn.Module,
        tasks: Mapping[str, int],
        num_scales: int = 4,
        self_distillation: bool | None = None,
    ) -> None:
        super().__init__(backbone, tasks)
        channels = out_channels(backbone)
        if num_scales < 2 or len(channels) < num_scales:
            raise MtlkitError(
                f"MTI-Net needs {num_scales} scales (at least 2); the backbone returns {len(channels)} feature maps"
            )
        self.num_scales = num_scales
        self._first = len(channels) - num_scales
        ch = channels[self._first :]
        self.channels = ch
        self.self_distillation = len(self.tasks) == 1 if self_distillation is None else bool(self_distillation)
        n = num_scales
        self.initial = nn.ModuleList(
            InitialTaskPrediction(self.task_channels, ch[s] + (ch[s + 1] if s < n - 1 else 0), ch[s]) for s in range(n)
        )
        self.fpm = nn.ModuleList(FPM(self.tasks, ch[s]) if s > 0 else nn.Identity() for s in range(n))
        self.distillation = nn.ModuleList(Distillation(self.tasks, ch[s], self.self_distillation) for s in range(n))
        self.heads = nn.ModuleDict({t: HRNetHead(ch, c) for t, c in self.task_channels.items()})

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder output: the backbone's last ``num_scales`` maps (finest first)."""
        self._input_size = tuple(x.shape[-2:])
        return list(self.backbone(x))[self._first :]

    def forward_heads(
        self, feats: Any, tasks: Iterable[str] | None = None, output_size: tuple[int, int] | None = None
    ) -> Outputs:
        names = self._select(tasks)
        size = self._output_size(output_size)
        n = self.num_scales
        scale_feats: list[dict[str, torch.Tensor]] = [{}] * n
        scale_preds: list[dict[str, torch.Tensor]] = [{}] * n
        prev = None
        for s in reversed(range(n)):
            scale_feats[s], scale_preds[s] = self.initial[s](feats[s], prev)
            if s > 0:
                prev = self.fpm[s](scale_feats[s])
        self.cut = [scale_feats[s][a] for s in range(n) for a in self.tasks]
        distilled = [self.distillation[s](scale_feats[s], names) for s in range(n)]
        out = {t: resize_to(self.heads[t]([d[t] for d in distilled]), size) for t in names}
        self.aux = {t: {f"scale_{s}": resize_to(scale_preds[s][t], size) for s in range(n)} for t in names}
        return out

    def _task_modules(self, task: str) -> list[nn.Module | nn.Parameter]:
        mods: list[nn.Module | nn.Parameter] = [self.heads[task]]
        mods += [init.decoders[task] for init in self.initial]  # type: ignore[index]
        mods += [d.self_attention[task] for d in self.distillation]  # type: ignore[index]
        return mods

    def _last_encoder_parameters(self) -> list[nn.Parameter]:
        return cnn_last_layer_parameters(self.backbone)
