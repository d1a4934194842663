"""Task heads: concatenated multi-layer features -> head -> bilinear upsampling to the input size.

``linear``: one 1x1 convolution (the selective-update paper's decoder). ``conv``: Conv3x3-BN-ReLU then a
1x1 convolution (the DTME paper's "one Conv-BN-ReLU block" decoder). ``classification``: mean-pooled last
feature map -> linear layer (MultiMNIST-style tasks).
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


class ClassificationHead(nn.Module):
    """Global-average-pooled last feature map -> linear classifier (for ``kind == "classification"``)."""

    def __init__(self, in_channels: list[int], out_channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels[-1], out_channels)

    def forward(self, feats: list[torch.Tensor], output_size: tuple[int, int] | None = None) -> torch.Tensor:
        return self.fc(feats[-1].mean(dim=(-2, -1)))
