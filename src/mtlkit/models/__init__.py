"""Models: backbones from timm (every ViT is timm's VisionTransformer), task heads, SharedBottom /
MultiTaskModel and the model protocol.

Nothing here imports timm or torchvision at import time; they load when a backbone is built.
"""

from mtlkit.models._registry import BACKBONES, build_backbone, build_model, check_model
from mtlkit.models._transforms import TRANSFORMS, apply_transforms
from mtlkit.models.backbones import (
    FAMILIES,
    VIT_PRESETS,
    FeatureBackbone,
    ViTBackbone,
    checkpoint_report,
    vit_out_indices,
)
from mtlkit.models.heads import HEADS, ClassificationHead, ConvHead, DeepLabHead, DenseHead, HRNetHead, LinearHead
from mtlkit.models.multitask import MultiTaskModel, SharedBottom
from mtlkit.models.protocol import MultiTaskProtocol, has_features, run_model

__all__ = [
    "BACKBONES",
    "FAMILIES",
    "HEADS",
    "TRANSFORMS",
    "VIT_PRESETS",
    "ClassificationHead",
    "ConvHead",
    "DeepLabHead",
    "DenseHead",
    "FeatureBackbone",
    "HRNetHead",
    "LinearHead",
    "MultiTaskModel",
    "MultiTaskProtocol",
    "SharedBottom",
    "has_features",
    "run_model",
    "ViTBackbone",
    "apply_transforms",
    "build_backbone",
    "build_model",
    "check_model",
    "checkpoint_report",
    "vit_out_indices",
]
