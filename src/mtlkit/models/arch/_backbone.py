"""What the architectures need from a backbone, found on any backbone of the matching kind.

The backbone contract (mtlkit.models): ``forward(x) -> list[Tensor]`` of feature maps ``(B, C_i, H_i, W_i)``
and ``out_channels: list[int]``. CNN backbones are timm ``features_only`` models (or wrap one); ViT backbones
also expose ``embed(x)`` (tokens with prefix tokens and position embeddings), ``blocks``,
``num_prefix_tokens`` and a final ``norm``.

MTAN needs more of a CNN: the input of each stage's last block (the official code attends "over the last
bottleneck" of each ResNet layer). :func:`cnn_stages` finds the stage modules (``backbone.stage_modules()``
when the backbone provides it, otherwise the timm ``FeatureListNet`` inside and its ``feature_info``), and
:func:`last_block` the stage's last block.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlkit.errors import MtlkitError


def out_channels(backbone: nn.Module) -> list[int]:
    ch = getattr(backbone, "out_channels", None)
    if ch is None:
        info = getattr(backbone, "feature_info", None)
        if info is not None and hasattr(info, "channels"):
            return list(info.channels())
        raise MtlkitError(f"backbone {type(backbone).__name__} has no out_channels; wrap it to list its channels")
    return list(ch)


def _feature_net(backbone: nn.Module) -> nn.ModuleDict | None:
    """The timm FeatureListNet / FeatureDictNet inside ``backbone`` (a ModuleDict with ``feature_info``)."""
    for m in backbone.modules():
        info = getattr(m, "feature_info", None)
        if isinstance(m, nn.ModuleDict) and info is not None and hasattr(info, "module_name"):
            return m
    return None


def cnn_stages(backbone: nn.Module) -> list[nn.Module]:
    """One module per feature map the backbone returns (same order)."""
    fn = getattr(backbone, "stage_modules", None)
    if fn is not None:
        return list(fn())
    net = _feature_net(backbone)
    if net is None:
        raise MtlkitError(
            f"cannot find the stages of backbone {type(backbone).__name__}: MTAN needs a timm features_only CNN "
            "(or a backbone with stage_modules())"
        )
    return [net[name.replace(".", "_")] for name in net.feature_info.module_name()]


def last_block(stage: nn.Module) -> nn.Module | None:
    """The last block of a stage: descend through ``nn.Sequential`` and ``.blocks`` containers."""
    m = stage
    while True:
        if isinstance(m, nn.Sequential) and len(m):
            m = m[-1]
            continue
        blocks = getattr(m, "blocks", None)
        if isinstance(blocks, nn.Sequential) and len(blocks):
            m = blocks[-1]
            continue
        break
    return None if m is stage else m


def block_in_channels(block: nn.Module) -> int:
    """Input channels of a block: those of its first convolution."""
    for m in block.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise MtlkitError(f"block {type(block).__name__} has no convolution; MTAN cannot attend over it")


# ---------------------------------------------------------------------------------------------- ViTs


def vit_patch_size(backbone: nn.Module) -> tuple[int, int]:
    """``backbone.patch_size``, its config's, else the first submodule's (timm's ``PatchEmbed``, also inside
    a wrapper such as mtlkit's timm ViT adapter)."""
    p = getattr(backbone, "patch_size", None)
    if p is None and hasattr(backbone, "config"):
        p = getattr(backbone.config, "patch_size", None)
    if p is None:
        for m in backbone.modules():
            q = getattr(m, "patch_size", None)
            if isinstance(q, (int, tuple, list)):
                p = q
                break
    if p is None:
        raise MtlkitError(f"cannot find the patch size of backbone {type(backbone).__name__}; give it patch_size")
    return (p, p) if isinstance(p, int) else (int(p[0]), int(p[1]))


def vit_grid(backbone: nn.Module, img_size: tuple[int, int] | None = None) -> tuple[int, int]:
    """Token grid (rows, cols) at ``img_size``, or the backbone's own grid."""
    if img_size is not None:
        ph, pw = vit_patch_size(backbone)
        if img_size[0] % ph or img_size[1] % pw:
            raise MtlkitError(f"image size {tuple(img_size)} is not divisible by the patch size {(ph, pw)}")
        return img_size[0] // ph, img_size[1] // pw
    grid = getattr(backbone, "grid", None)
    if grid is None:
        grid = getattr(getattr(backbone, "patch_embed", None), "grid_size", None)
    if grid is None:
        raise MtlkitError(f"cannot find the token grid of backbone {type(backbone).__name__}; give img_size")
    return int(grid[0]), int(grid[1])


def vit_blocks(backbone: nn.Module) -> list[nn.Module]:
    blocks = getattr(backbone, "blocks", None)
    if blocks is None or not hasattr(backbone, "embed"):
        raise MtlkitError(
            f"backbone {type(backbone).__name__} is not a token-level ViT (needs embed(), blocks, "
            "num_prefix_tokens): TaskPrompter runs the ViT blocks itself"
        )
    return list(blocks)


def vit_last_layer_parameters(backbone: nn.Module) -> list[nn.Parameter]:
    fn = getattr(backbone, "last_layer_parameters", None)
    if fn is not None:
        return list(fn())
    params = list(backbone.blocks[-1].parameters())
    norm = getattr(backbone, "norm", None)
    return params + (list(norm.parameters()) if norm is not None else [])


def cnn_last_layer_parameters(backbone: nn.Module) -> list[nn.Parameter]:
    """The backbone's own ``last_layer_parameters()``, else the last block of its last stage (the stage: the
    last child with parameters of the innermost model, e.g. HRNet's ``stage4``)."""
    fn = getattr(backbone, "last_layer_parameters", None)
    if fn is not None:
        return list(fn())
    try:
        stage = cnn_stages(backbone)[-1]
    except MtlkitError:
        m = backbone
        while True:
            children = [c for c in m.children() if any(True for _ in c.parameters())]
            if len(children) != 1:
                break
            m = children[0]
        if not children:
            return list(m.parameters())
        stage = children[-1]
    block = last_block(stage) or stage
    return list(block.parameters())


def maybe_identity(module: nn.Module | None) -> nn.Module:
    return module if module is not None else nn.Identity()


def as_list(x: torch.Tensor | list[torch.Tensor] | tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    return [x] if isinstance(x, torch.Tensor) else list(x)
