"""Models: a timm-compatible ViT backbone, task heads, SharedBottom / MultiTaskModel and the model protocol."""

from mtlkit.models._registry import BACKBONES, build_model
from mtlkit.models._transforms import TRANSFORMS, apply_transforms
from mtlkit.models.heads import HEADS, ClassificationHead, ConvHead, DenseHead, LinearHead
from mtlkit.models.multitask import MultiTaskModel, SharedBottom
from mtlkit.models.protocol import MultiTaskProtocol, has_features, run_model
from mtlkit.models.vit import (
    VIT_PRESETS,
    Block,
    VisionTransformer,
    ViTConfig,
    load_timm_checkpoint,
    resize_pos_embed,
    vit_config,
)

__all__ = [
    "BACKBONES",
    "HEADS",
    "TRANSFORMS",
    "VIT_PRESETS",
    "apply_transforms",
    "Block",
    "ClassificationHead",
    "ConvHead",
    "DenseHead",
    "LinearHead",
    "MultiTaskModel",
    "MultiTaskProtocol",
    "SharedBottom",
    "has_features",
    "run_model",
    "ViTConfig",
    "VisionTransformer",
    "build_model",
    "load_timm_checkpoint",
    "resize_pos_embed",
    "vit_config",
]
