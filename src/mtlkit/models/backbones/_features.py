"""Any other timm model as a dense backbone through timm's ``features_only`` (multi-scale stages).

timm builds the feature extractor (``FeatureListNet``, HRNet's own feature class, or a ``forward_intermediates``
getter for ViT-like models such as SAM); we return NCHW maps and name the last shared layer.
"""

from __future__ import annotations

import torch
from torch import nn


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def last_block(stage: nn.Module) -> nn.Module:
    """The last block of a stage: the last member with parameters of a container (``nn.Sequential`` /
    ``nn.ModuleList``) or of a stage's ``blocks`` (ResNet ``layer4[-1]``, ConvNeXt / Swin
    ``stages[-1].blocks[-1]``, HRNet's last multi-resolution module); any other module is the block itself."""
    m = stage
    while True:
        if isinstance(getattr(m, "blocks", None), (nn.Sequential, nn.ModuleList)):
            m = m.blocks
        if not isinstance(m, (nn.Sequential, nn.ModuleList)):
            return m
        kids = [c for c in m.children() if _has_params(c)]
        if not kids:
            return m
        m = kids[-1]


class FeatureBackbone(nn.Module):
    """timm ``features_only`` model -> ``[(B, C_i, H / r_i, W / r_i)]`` for its ``out_indices``."""

    def __init__(self, model: nn.Module, family: str, img_size: tuple[int, int]) -> None:
        super().__init__()
        if hasattr(model, "reset_classifier"):  # HRNet's feature class keeps a classifier it never uses
            model.reset_classifier(0)
        self.model = model
        self.family = family
        self.img_size = tuple(img_size)
        info = model.feature_info
        self.out_channels: list[int] = list(info.channels())
        self.reductions: list[int] = list(info.reduction())
        self.stage_names: list[str] = list(info.module_name())
        self._nhwc = str(getattr(model, "output_fmt", "NCHW")).upper().endswith("NHWC")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.model(x)
        if isinstance(feats, dict):
            feats = list(feats.values())
        if self._nhwc:
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        return list(feats)

    def _stage(self, name: str) -> nn.Module:
        for cand in (name, name.replace(".", "_"), f"model.{name}"):
            try:
                return self.model.get_submodule(cand)
            except AttributeError:
                continue
        raise AttributeError(f"feature stage {name!r} not found in {type(self.model).__name__}")

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The last shared layer: the last block of the last feature stage (AvgNorm / GradNorm ``params=last``)."""
        return list(last_block(self._stage(self.stage_names[-1])).parameters())
