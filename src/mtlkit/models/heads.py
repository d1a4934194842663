"""Task heads: the backbone's feature maps -> head -> bilinear upsampling to the input size.

``linear``: one 1x1 convolution on the concatenated maps (the selective-update paper's decoder). ``conv``:
Conv3x3-BN-ReLU then a 1x1 convolution (the DTME paper's "one Conv-BN-ReLU block" decoder). ``aspp``:
DeepLab-v3 on the last map (the imbalance study on dilated ResNets, following Vandenhende et al.). ``hrnet``:
all maps upsampled to the first one's size and concatenated, 1x1 Conv-BN-ReLU, 1x1 conv (HRNet's head in
Vandenhende et al.). ``classification``: mean-pooled last feature map -> linear layer (MultiMNIST-style tasks).
Maps of different sizes are resized (bilinear) to the first map's size before concatenation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtlkit._registry import Registry

HEADS: Registry[type[nn.Module]] = Registry("head")


class DenseHead(nn.Module):
    """Base for dense heads: concatenates the feature maps, predicts, upsamples to ``output_size``."""

    def __init__(self, in_channels: list[int], out_channels: int) -> None:
        super().__init__()
        self.in_channels = sum(in_channels)
        self.out_channels = out_channels

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, feats: list[torch.Tensor], output_size: tuple[int, int]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        x = torch.cat([f if f.shape[-2:] == size else F.interpolate(f, size=size, mode="bilinear") for f in feats], 1)
        return F.interpolate(self.predict(x), size=output_size, mode="bilinear", align_corners=False)


@HEADS.register("linear")
class LinearHead(DenseHead):
    def __init__(self, in_channels: list[int], out_channels: int) -> None:
        super().__init__(in_channels, out_channels)
        self.proj = nn.Conv2d(self.in_channels, out_channels, kernel_size=1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


@HEADS.register("conv")
class ConvHead(DenseHead):
    def __init__(self, in_channels: list[int], out_channels: int, hidden: int | None = None) -> None:
        super().__init__(in_channels, out_channels)
        hidden = hidden or in_channels[-1]
        self.conv = nn.Sequential(
            nn.Conv2d(self.in_channels, hidden, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
        )
        self.proj = nn.Conv2d(hidden, out_channels, kernel_size=1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.conv(x))


class _ASPPPooling(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    pad = dilation if kernel == 3 else 0
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLab-v3): a 1x1 branch, three dilated 3x3 branches, image pooling;
    concatenated, projected by 1x1 Conv-BN-ReLU and dropout 0.5 (Vandenhende et al. models/aspp.py)."""

    def __init__(self, in_channels: int, rates: tuple[int, int, int] = (12, 24, 36), channels: int = 256) -> None:
        super().__init__()
        branches = [_conv_bn_relu(in_channels, channels, 1)]
        branches += [_conv_bn_relu(in_channels, channels, 3, r) for r in rates]
        branches.append(_ASPPPooling(in_channels, channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(*_conv_bn_relu(5 * channels, channels, 1), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([conv(x) for conv in self.convs], dim=1))


@HEADS.register("aspp")
class DeepLabHead(DenseHead):
    """DeepLab-v3 head: ASPP (rates 12, 24, 36; 256 channels), Conv3x3-BN-ReLU, 1x1 conv, as Vandenhende et al.
    (github SimonVandenhende/Multi-Task-Learning-PyTorch, models/aspp.py ``DeepLabHead``) put on the dilated
    ResNet's last stage, which is the one map a ResNet backbone gives here. Our choice for backbones with several
    maps (HRNet, ConvNeXt, Swin, ViT): ASPP on their concatenation (resized to the first map), so every branch
    is used, like Vandenhende et al.'s HRNet feature fusion before a head."""

    def __init__(self, in_channels: list[int], out_channels: int, rates: tuple[int, int, int] = (12, 24, 36)) -> None:
        super().__init__(in_channels, out_channels)
        self.aspp = ASPP(self.in_channels, rates)
        self.conv = _conv_bn_relu(256, 256, 3)
        self.proj = nn.Conv2d(256, out_channels, 1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.conv(self.aspp(x)))


@HEADS.register("hrnet")
class HRNetHead(DenseHead):
    """HRNet's head: all maps upsampled to the first (highest-resolution) one and concatenated, 1x1
    Conv-BN-ReLU keeping the channels, 1x1 conv to the outputs (Vandenhende et al. models/seg_hrnet.py
    ``HighResolutionHead``; BatchNorm momentum 0.1 as there)."""

    def __init__(self, in_channels: list[int], out_channels: int) -> None:
        super().__init__(in_channels, out_channels)
        c = self.in_channels
        self.conv = nn.Sequential(nn.Conv2d(c, c, 1), nn.BatchNorm2d(c, momentum=0.1), nn.ReLU())
        self.proj = nn.Conv2d(c, out_channels, 1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.conv(x))


class ClassificationHead(nn.Module):
    """Global-average-pooled last feature map -> linear layer (per-sample tasks: classification, binary,
    multilabel, regression)."""

    def __init__(self, in_channels: list[int], out_channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels[-1], out_channels)

    def forward(self, feats: list[torch.Tensor], output_size: tuple[int, int] | None = None) -> torch.Tensor:
        return self.fc(feats[-1].mean(dim=(-2, -1)))
