"""Tiny random-init members of each tested backbone family (CPU, fractions of a second each)."""

from __future__ import annotations

import torch

#: family -> (timm name, timm arguments, image size); widths/depths reduced, the family's structure kept
FAMILY_CONFIGS: dict[str, tuple[str, dict, int]] = {
    "vit": ("vit_base_patch16_224", dict(embed_dim=32, depth=4, num_heads=2, patch_size=8), 32),
    "resnet": ("resnet18", dict(layers=(1, 1, 1, 1)), 32),
    "hrnet": ("hrnet_w18_small", {}, 32),
    "convnext": ("convnext_atto", dict(dims=(16, 32, 64, 128), depths=(1, 1, 1, 1)), 32),
    "swin": ("swin_tiny_patch4_window7_224", dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2),
                                                   window_size=2), 32),
    "samvit": ("samvit_base_patch16", dict(embed_dim=32, depth=4, num_heads=2, global_attn_indexes=(1, 3)), 32),
}


def image(size: int, b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))
