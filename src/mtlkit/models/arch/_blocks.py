"""Convolutional building blocks shared by the architectures (MTAN, MTI-Net, InvPT, TaskPrompter).

Each block follows the official module it reproduces, so the parameter counts match:

- ``BasicBlock`` / ``Bottleneck``: torchvision's ResNet blocks as copied into
  SimonVandenhende/Multi-Task-Learning-PyTorch ``models/resnet.py`` (expansion 1 / 4).
- ``SEBlock`` / ``SABlock``: the same repository's ``models/layers.py``.
- ``ASPP`` / ``DeepLabHead``: ``models/aspp.py`` there (rates 12, 24, 36; 256 channels; dropout 0.5).
- ``HRNetHead``: ``HighResolutionHead`` in ``models/seg_hrnet.py`` there.
- ``ConvBNReLU``: InvPT's ``ConvBlock`` (prismformore/Multi-Task-Transformer
  ``InvPT/models/transformers/transformer_decoder.py``).

BatchNorm is ``nn.BatchNorm2d`` everywhere (InvPT's code uses SyncBatchNorm; the engine converts when it
runs distributed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    """1x1 convolution + BatchNorm: the residual projection of a block whose width changes."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """ResNet basic block: conv3x3-BN-ReLU-conv3x3-BN + (projected) input, ReLU."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 (planes) - 3x3 (planes) - 1x1 (4 * planes) + (projected) input, ReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


def basic_block(cin: int, cout: int) -> BasicBlock:
    """A BasicBlock from ``cin`` to ``cout`` channels (1x1 conv + BN projection when they differ)."""
    return BasicBlock(cin, cout, downsample=None if cin == cout else conv_bn(cin, cout))


class SEBlock(nn.Module):
    """Squeeze-and-excitation: channel gates from the spatial mean (reduction ``r``, 16 as the official)."""

    def __init__(self, channels: int, r: int = 16) -> None:
        super().__init__()
        hidden = max(channels // r, 1)
        self.squeeze = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.squeeze(x.mean(dim=(2, 3)))
        return x * gate[:, :, None, None]


class SABlock(nn.Module):
    """Spatial attention: conv3x3(x) gated by sigmoid(conv3x3(x)) (PAD-Net / MTI-Net distillation)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.attention = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.Sigmoid())
        self.conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.attention(x)


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> list[nn.Module]:
    pad = 0 if kernel == 1 else dilation
    return [nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class _ASPPPooling(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, three dilated 3x3 and an image-pooling branch, then a 1x1 fuse."""

    def __init__(self, cin: int, rates: tuple[int, ...] = (12, 24, 36), channels: int = 256) -> None:
        super().__init__()
        branches: list[nn.Module] = [nn.Sequential(*_conv_bn_relu(cin, channels))]
        branches += [nn.Sequential(*_conv_bn_relu(cin, channels, 3, r)) for r in rates]
        branches.append(_ASPPPooling(cin, channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(*_conv_bn_relu(len(branches) * channels, channels), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.convs], dim=1))


class DeepLabHead(nn.Sequential):
    """ASPP -> conv3x3-BN-ReLU -> 1x1 classifier (the ResNet heads of the MTL survey code)."""

    def __init__(self, cin: int, cout: int, channels: int = 256) -> None:
        super().__init__(
            ASPP(cin, channels=channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, cout, 1),
        )


class HRNetHead(nn.Module):
    """Multi-scale maps upsampled to the finest, concatenated, 1x1-BN-ReLU-1x1 (``HighResolutionHead``)."""

    def __init__(self, in_channels: list[int], cout: int) -> None:
        super().__init__()
        c = sum(in_channels)
        self.last_layer = nn.Sequential(nn.Conv2d(c, c, 1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, cout, 1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        ups = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
        return self.last_layer(torch.cat(ups, dim=1))


class ConvBNReLU(nn.Sequential):
    """conv3x3 (no bias) - BN - ReLU (InvPT's ``ConvBlock``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(conv3x3(cin, cout), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize (align_corners=False, as every official file here), a no-op at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
