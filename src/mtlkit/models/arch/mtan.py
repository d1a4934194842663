"""MTAN: Multi-Task Attention Network (Liu, Johns & Davison, CVPR 2019) on a CNN with stages.

Follows the ResNet version of the MTL survey code the imbalance study builds on (SimonVandenhende/
Multi-Task-Learning-PyTorch ``models/mtan.py``, configs ``configs/{nyud,pascal}/resnet*/mtan.yml``), itself
the ResNet port of lorenmt/mtan (``im2im_pred/model_segnet_mtan.py``: one attention branch per task,
masks from the shared features, shared refinement between stages).

Per stage k of the shared backbone: ``u_b`` = the input of the stage's last block, ``u_t`` = the stage's
output. Task t's mask ``m_k = att_k[t](u_b)`` at the first stage and ``att_k[t](cat(u_b, a_{k-1}))`` after;
``a_k = m_k * u_t``, then (except at the last stage) the shared ``refine_k`` (one Bottleneck to the next
stage's width) and a max-pool to the next stage's resolution. Attention layers: 1x1 conv (out/4) - BN - ReLU -
1x1 conv - BN - sigmoid. Heads: DeepLab-v3 (ASPP) on ``a_last``, upsampled bilinearly to the input size.

Where we chose: the official code pools with a fixed ``MaxPool2d(2, 2)`` after stage 1 only (the dilated
ResNet keeps 1/8 after); we pool whenever the next stage is smaller (adaptive max-pool to its size, which is
the same 2x2 pool in the official setting), so any CNN with stages works. ``u_b`` is captured with a forward
pre-hook on each stage's last block, so the backbone runs unchanged.

Parameter split: backbone and ``refine`` blocks are shared; each task's attention layers and head are its own.
Balancing cut: ``{t: [a_last]}``, each task's head input (the shared refinements lie before it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.errors import MtlkitError
from mtlkit.models.arch._backbone import (
    block_in_channels,
    cnn_last_layer_parameters,
    cnn_stages,
    last_block,
    out_channels,
)
from mtlkit.models.arch._base import ArchModel, Outputs
from mtlkit.models.arch._blocks import Bottleneck, DeepLabHead, conv_bn


class AttentionLayer(nn.Sequential):
    """1x1 conv (mid) - BN - ReLU - 1x1 conv (out) - BN - sigmoid: a task's soft mask over a stage."""

    def __init__(self, cin: int, mid: int, cout: int) -> None:
        super().__init__(
            nn.Conv2d(cin, mid, 1),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1),
            nn.BatchNorm2d(cout),
            nn.Sigmoid(),
        )


class RefinementBlock(nn.Sequential):
    """One Bottleneck from ``cin`` to ``cout`` channels (shared between tasks)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(Bottleneck(cin, cout // 4, downsample=conv_bn(cin, cout)))


class _Capture:
    """Forward pre-hook storing a block's input in ``owner._captured[k]`` (an object, not a closure, so a
    deep copy of the model hooks into the copy)."""

    def __init__(self, owner: MTAN, k: int) -> None:
        self.owner = owner
        self.k = k

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.owner._captured[self.k] = args[0]


class MTAN(ArchModel):
    """MTAN over the last ``num_stages`` stages of a CNN backbone.

    Args:
        backbone: a timm ``features_only`` CNN (or a wrapper exposing ``stage_modules()``), e.g. ResNet-18
            with ``output_stride=8`` as the imbalance study (dilated ResNet, as the survey code).
        tasks: ``{task: output channels}``.
        num_stages: how many of the backbone's last feature maps get attention (4: ResNet ``layer1..4``).
        head_channels: ASPP width of the DeepLab heads (256 as published; smaller for tests).
    """

    arch = "mtan"

    def __init__(
        self, backbone: nn.Module, tasks: Mapping[str, int], num_stages: int = 4, head_channels: int = 256
    ) -> None:
        super().__init__(backbone, tasks)
        stages = cnn_stages(backbone)
        channels = out_channels(backbone)
        if len(stages) < num_stages or len(channels) < num_stages:
            raise MtlkitError(f"MTAN needs {num_stages} stages; the backbone returns {len(channels)} feature maps")
        self.num_stages = num_stages
        self._first = len(channels) - num_stages
        stages = stages[self._first :]
        ch = channels[self._first :]
        blocks = [last_block(s) for s in stages]
        if any(b is None for b in blocks):
            raise MtlkitError("MTAN attends over each stage's last block: every stage must be a sequence of blocks")
        cb = [block_in_channels(b) for b in blocks]  # type: ignore[arg-type]
        self._block_channels, self._stage_channels = cb, ch
        att = []
        for k in range(num_stages):
            cin = cb[k] if k == 0 else cb[k] + ch[k]
            att.append(nn.ModuleDict({t: AttentionLayer(cin, ch[k] // 4, ch[k]) for t in self.tasks}))
        self.attention = nn.ModuleList(att)
        self.refine = nn.ModuleList(RefinementBlock(ch[k], ch[k + 1]) for k in range(num_stages - 1))
        self.heads = nn.ModuleDict({t: DeepLabHead(ch[-1], c, head_channels) for t, c in self.task_channels.items()})
        self._captured: list[torch.Tensor | None] = [None] * num_stages
        for k, b in enumerate(blocks):
            b.register_forward_pre_hook(_Capture(self, k))  # type: ignore[union-attr]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The encoder output: ``[u_b_1, u_t_1, ..., u_b_n, u_t_n]`` of the attended stages."""
        self._input_size = tuple(x.shape[-2:])
        self._captured = [None] * self.num_stages
        maps = list(self.backbone(x))[self._first :]
        captured, self._captured = self._captured, [None] * self.num_stages
        if any(c is None for c in captured):
            raise MtlkitError("MTAN did not see every stage's last block run; is the backbone's forward standard?")
        for k, (ub, ut) in enumerate(zip(captured, maps, strict=True)):
            if ub.dim() != 4 or ub.shape[1] != self._block_channels[k] or ut.shape[1] != self._stage_channels[k]:
                raise MtlkitError(
                    f"MTAN expects NCHW stage maps; stage {k} gave {tuple(ub.shape)} into its last block and "
                    f"{tuple(ut.shape)} out (a channels-last backbone such as Swin is not supported)"
                )
        feats: list[torch.Tensor] = []
        for ub, ut in zip(captured, maps, strict=True):
            feats += [ub, ut]  # type: ignore[list-item]
        return feats

    def forward_heads(
        self, feats: Any, tasks: Iterable[str] | None = None, output_size: tuple[int, int] | None = None
    ) -> Outputs:
        names = self._select(tasks)
        size = self._output_size(output_size)
        ub, ut = feats[0::2], feats[1::2]
        out: dict[str, torch.Tensor] = {}
        cut: dict[str, list[torch.Tensor]] = {}
        for t in names:
            a = None
            for k in range(self.num_stages):
                inp = ub[k] if a is None else torch.cat([ub[k], a], dim=1)
                a = self.attention[k][t](inp) * ut[k]
                if k < self.num_stages - 1:
                    a = self.refine[k](a)
                    if a.shape[-2:] != ub[k + 1].shape[-2:]:
                        a = F.adaptive_max_pool2d(a, ub[k + 1].shape[-2:])
            cut[t] = [a]
            out[t] = F.interpolate(self.heads[t](a), size=size, mode="bilinear", align_corners=False)
        self.aux, self.cut = {}, cut
        return out

    def _task_modules(self, task: str) -> list[nn.Module | nn.Parameter]:
        return [self.heads[task]] + [att[task] for att in self.attention]

    def _last_encoder_parameters(self) -> list[nn.Parameter]:
        return cnn_last_layer_parameters(self.backbone)
