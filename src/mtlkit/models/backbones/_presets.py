"""mtlkit's named model presets and the backbone families it knows, without importing timm.

Every preset is a timm architecture plus keyword overrides (the same arguments ``timm.create_model`` takes), so
``--model micro`` builds timm's ``VisionTransformer`` and a ``--pretrained`` checkpoint of the named architecture
loads into it. ``micro`` is ours (sized for CPU training at 64x64); tiny/small/base/large are timm's ViT-Ti/S/B/L.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """A named timm configuration: ``timm.create_model(arch, **kwargs)``."""

    arch: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def patch_size(self) -> int:
        return int(self.kwargs.get("patch_size", 16))


#: name -> timm configuration (embed dim, depth, heads, patch; the image size is given at build time)
VIT_PRESETS: dict[str, Preset] = {
    "micro": Preset(
        "vit_tiny_patch16_224",
        dict(embed_dim=128, depth=6, num_heads=4, patch_size=8),
        "ViT, D 128, 6 blocks, 4 heads, patch 8 (ours: CPU training at 64x64)",
    ),
    "tiny": Preset("vit_tiny_patch16_224", {}, "ViT-Ti/16: D 192, 12 blocks, 3 heads"),
    "small": Preset("vit_small_patch16_224", {}, "ViT-S/16: D 384, 12 blocks, 6 heads"),
    "base": Preset("vit_base_patch16_224", {}, "ViT-B/16: D 768, 12 blocks, 12 heads"),
    "large": Preset("vit_large_patch16_224", {}, "ViT-L/16: D 1024, 24 blocks, 16 heads"),
}


@dataclass(frozen=True)
class Family:
    """A backbone family: how its dense features are taken (see :mod:`mtlkit.models.backbones`)."""

    name: str
    #: timm module of the family's entrypoints (``timm.models.<module>``)
    module: str
    #: example timm names (the seeds' networks first), built for ``mtlkit models``
    examples: tuple[str, ...]
    features: str
    #: extra ``timm.create_model`` arguments of the family's dense-prediction setting
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: feature indices (timm ``out_indices``) fed to the heads; None = the family's rule (see ``features``)
    out_indices: tuple[int, ...] | None = None
    dtme: bool = False


FAMILIES: dict[str, Family] = {
    "vit": Family(
        "vit", "vision_transformer",
        ("vit_tiny_patch16_224", "vit_base_patch16_384", "vit_base_patch16_clip_384", "vit_base_patch14_reg4_dinov2",
         "vit_large_patch16_224"),
        "4 blocks: 3 evenly spaced + the last, final norm on the last (sel-update-mtl / InvPT select_list)",
        dtme=True,
    ),
    "resnet": Family(
        "resnet", "resnet", ("resnet18", "resnet50"),
        "dilated, output stride 8 (Vandenhende et al. ResnetDilated); the last stage (layer4)",
        kwargs=dict(output_stride=8), out_indices=(4,),
    ),
    "hrnet": Family(
        "hrnet", "hrnet", ("hrnet_w18", "hrnet_w18_small_v2"),
        "the 4 branches at strides 4-32 (HRNet's own features, no classification 'incre' modules)",
        kwargs=dict(feature_location=""), out_indices=(1, 2, 3, 4),
    ),
    "convnext": Family(
        "convnext", "convnext", ("convnext_tiny",), "the 4 stages at strides 4-32", out_indices=(0, 1, 2, 3),
    ),
    "swin": Family(
        "swin", "swin_transformer", ("swin_tiny_patch4_window7_224",), "the 4 stages at strides 4-32",
        out_indices=(0, 1, 2, 3),
    ),
    "samvit": Family(
        "samvit", "vision_transformer_sam", ("samvit_base_patch16",),
        "4 blocks as for ViT (timm forward_intermediates, NHWC blocks with windowed attention; no DTME)",
    ),
}


#: other timm modules whose models are ``VisionTransformer`` subclasses (DeiT: class + distillation token)
_VIT_MODULES = ("deit",)


def family_of_module(module: str) -> Family | None:
    """The family whose timm module is ``module`` (e.g. ``"resnet"``), None for other timm models."""
    module = module.rsplit(".", 1)[-1]
    if module in _VIT_MODULES:
        return FAMILIES["vit"]
    return next((f for f in FAMILIES.values() if f.module == module), None)


def vit_out_indices(depth: int) -> tuple[int, ...]:
    """Blocks whose outputs feed the heads: 3 evenly spaced ones and the last (for depth >= 4).

    As the official code of the selective-update paper (github wooseong97/sel-update-mtl,
    models/transformers/vit.py) and InvPT (github prismformore/Multi-Task-Transformer, InvPT/models/transformers/
    vit.py): ``select_list = [3, 6, 9]`` for 12 blocks (ViT-T/S/B) and ``[6, 12, 18]`` for 24 (ViT-L), 1-based,
    plus the final normed output; i.e. 0-based (2, 5, 8, 11) and (5, 11, 17, 23). Other depths: ``depth / 4``
    spacing, rounded half up (depth 6 -> (1, 2, 4, 5)).
    """
    n = min(4, depth)
    step = depth / n
    return tuple(math.floor(step * (k + 1) + 0.5) - 1 for k in range(n))
