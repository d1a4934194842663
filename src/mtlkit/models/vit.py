"""A plain Vision Transformer backbone whose state-dict keys match timm's ``VisionTransformer``.

Pre-norm blocks (``norm1 → attn → +``, ``norm2 → mlp → +``), a class token and learned absolute position
embeddings, so a timm / safetensors checkpoint on disk loads with :func:`load_timm_checkpoint` (position
embeddings resized to the input grid). The blocks are an ``nn.ModuleList`` (``self.blocks``) so DTME and
the token-space analysis can hook or wrap them; :meth:`forward` returns the token maps of ``out_indices``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.errors import MtlkitError, UnknownNameError


@dataclass(frozen=True)
class ViTConfig:
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 16
    img_size: tuple[int, int] = (224, 224)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    #: indices of the blocks whose outputs feed the heads; None = four evenly spaced layers
    #: ending at the last one (as the official selective-update code takes features)
    out_indices: tuple[int, ...] | None = None

    def resolved_out_indices(self) -> tuple[int, ...]:
        if self.out_indices is not None:
            return tuple(i % self.depth for i in self.out_indices)
        # round half up: Python's round() (half to even) made depth 6 give (1, 2, 3, 5), not (1, 2, 4, 5)
        n = min(4, self.depth)
        step = self.depth / n
        return tuple(math.floor(step * (k + 1) + 0.5) - 1 for k in range(n))

    def to_dict(self) -> dict:
        return asdict(self)


#: Presets: ``micro`` is sized for CPU training at 64x64; the others are timm's ViT-Ti/S/B/L dimensions.
VIT_PRESETS: dict[str, ViTConfig] = {
    "micro": ViTConfig(embed_dim=128, depth=6, num_heads=4, patch_size=8),
    "tiny": ViTConfig(embed_dim=192, depth=12, num_heads=3),
    "small": ViTConfig(embed_dim=384, depth=12, num_heads=6),
    "base": ViTConfig(embed_dim=768, depth=12, num_heads=12),
    "large": ViTConfig(embed_dim=1024, depth=24, num_heads=16),
}


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} must be divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (timm ``Block`` without layer-scale / drop-path)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT backbone returning multi-layer feature maps ``[(B, D, H/p, W/p), ...]`` of ``out_indices``."""

    num_prefix_tokens = 1  # the class token

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        h, w = config.img_size
        p = config.patch_size
        if h % p or w % p:
            raise MtlkitError(
                f"image size {h}x{w} is not divisible by the patch size {p}; use a multiple of {p} or another patch"
            )
        self.grid = (h // p, w // p)
        d = config.embed_dim
        self.embed_dim = d
        self.patch_embed = PatchEmbed(p, 3, d)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid[0] * self.grid[1] + 1, d))
        self.blocks = nn.ModuleList(
            Block(d, config.num_heads, config.mlp_ratio, config.qkv_bias) for _ in range(config.depth)
        )
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.out_indices = config.resolved_out_indices()
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def out_channels(self) -> list[int]:
        return [self.embed_dim] * len(self.out_indices)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, H, W) -> tokens (B, 1 + N, D) with class token and position embeddings."""
        tokens = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1) + self.pos_embed

    def tokens_to_map(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Block ``index``'s tokens -> a feature map (B, D, h, w); the last block's output is normed."""
        if index == len(self.blocks) - 1:
            x = self.norm(x)
        x = x[:, self.num_prefix_tokens :]
        b, _, d = x.shape
        return x.transpose(1, 2).reshape(b, d, *self.grid)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if tuple(x.shape[-2:]) != tuple(self.config.img_size):
            raise MtlkitError(
                f"input size {tuple(x.shape[-2:])} differs from the model's img_size {self.config.img_size}; "
                "resize the input or build the model for that size"
            )
        x = self.embed(x)
        feats = []
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            if i in self.out_indices:
                feats.append(self.tokens_to_map(x, i))
        return feats

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The last shared layer (the last block and the final norm), e.g. for AvgNorm's gradients."""
        return list(self.blocks[-1].parameters()) + list(self.norm.parameters())


def vit_config(
    preset: str, img_size: int | tuple[int, int] = 64, patch_size: int | None = None, **overrides
) -> ViTConfig:
    """The preset's config at ``img_size`` (optionally another patch size or other overrides)."""
    if preset not in VIT_PRESETS:
        raise UnknownNameError(f"unknown model {preset!r}; valid models: {', '.join(VIT_PRESETS)}")
    size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
    cfg = replace(VIT_PRESETS[preset], img_size=size, **overrides)
    if patch_size is not None:
        cfg = replace(cfg, patch_size=patch_size)
    return cfg


def resize_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], num_prefix_tokens: int = 1) -> torch.Tensor:
    """Bicubic resize of absolute position embeddings (1, P + N, D) to a new grid (as timm does)."""
    prefix, grid_tokens = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    old = int(math.isqrt(grid_tokens.shape[1]))
    if old * old != grid_tokens.shape[1]:
        raise ValueError(f"checkpoint position embedding has {grid_tokens.shape[1]} tokens: not a square grid")
    if (old, old) == tuple(new_grid):
        return pos_embed
    d = grid_tokens.shape[-1]
    g = grid_tokens.reshape(1, old, old, d).permute(0, 3, 1, 2).float()
    g = F.interpolate(g, size=new_grid, mode="bicubic", align_corners=False, antialias=True)
    g = g.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], d).to(pos_embed.dtype)
    return torch.cat([prefix, g], dim=1)


def load_timm_checkpoint(model: VisionTransformer, path: str, strict: bool = True) -> list[str]:
    """Load a timm ViT checkpoint (``.safetensors``, or ``.pth``/``.bin`` state dict) into ``model``.

    Classifier keys (``head.*``, ``fc_norm.*``) are dropped and position embeddings resized. Returns the
    checkpoint keys that were ignored. Mismatched shapes raise an error naming the key.
    """
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise MtlkitError(f"checkpoint not found: {p} (expected a timm ViT .safetensors or .pth file)")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
        state = state.get("model", state.get("state_dict", state))
    ignored = [k for k in state if k.startswith(("head.", "fc_norm.", "head_drop."))]
    state = {k: v for k, v in state.items() if k not in ignored}
    if "pos_embed" in state:
        state["pos_embed"] = resize_pos_embed(state["pos_embed"], model.grid, model.num_prefix_tokens)
    own = model.state_dict()
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            raise MtlkitError(f"checkpoint key {k!r} has shape {tuple(v.shape)}, model expects {tuple(own[k].shape)}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if strict and (missing or unexpected):
        raise MtlkitError(f"checkpoint does not match the model: missing {missing}, unexpected {unexpected}")
    return ignored + list(unexpected)
