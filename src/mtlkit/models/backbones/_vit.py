"""A timm ``VisionTransformer`` as a dense multi-task backbone, with the token-level interface DTME and Recon use.

The wrapped model (``self.vit``) is timm's own module, so its state-dict keys are timm's under ``vit.`` and a
timm checkpoint loads through timm. Features follow timm's ``forward_intermediates``: the patch tokens of the
blocks in ``out_indices`` reshaped to maps; the last block's output goes through the final norm, as the
``x = self.norm(x)`` timm returns next to the intermediates (and as the selective-update / InvPT code takes it).
"""

from __future__ import annotations

import torch
from torch import nn

from mtlkit.errors import MtlkitError
from mtlkit.models.backbones._presets import vit_out_indices


class ViTBackbone(nn.Module):
    """timm ViT -> ``[(B, D, H/p, W/p)] * len(out_indices)``.

    Token layout of ``embed(x)`` and of every block's input / output (B, P + N, D): the ``num_prefix_tokens``
    prefix tokens first (class token if the model has one, then its register tokens), then the N = h * w patch
    tokens in row-major order; ``token_slices()`` names them, ``prefix_token_names`` lists the prefix ones.
    """

    family = "vit"

    def __init__(self, vit: nn.Module, out_indices: tuple[int, ...] | None = None) -> None:
        super().__init__()
        depth = len(vit.blocks)
        idx = vit_out_indices(depth) if out_indices is None else tuple(int(i) % depth for i in out_indices)
        if not idx or sorted(set(idx)) != list(idx):
            raise MtlkitError(f"out_indices {out_indices} must be distinct block indices in increasing order")
        # drop the classifier (head, fc_norm, attention pool) and blocks after the last feature: unused parameters
        # would get no gradient; timm's own pruning, the final norm is kept
        vit.prune_intermediate_layers(list(idx), prune_norm=False, prune_head=True)
        self.vit = vit
        self.out_indices = idx
        self.embed_dim = int(vit.embed_dim)
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        self.img_size = tuple(int(s) for s in vit.patch_embed.img_size)
        self.grid = tuple(int(g) for g in vit.patch_embed.grid_size)
        has_cls = getattr(vit, "cls_token", None) is not None
        has_dist = getattr(vit, "dist_token", None) is not None  # DeiT's distillation token, after the class token
        n_reg = int(getattr(vit, "num_reg_tokens", 0))
        names = (["cls"] if has_cls else []) + (["dist"] if has_dist else []) + [f"reg{i}" for i in range(n_reg)]
        names += [f"prefix{i}" for i in range(len(names), self.num_prefix_tokens)]  # any other prefix token
        self.prefix_token_names: tuple[str, ...] = tuple(names)
        # the embedding as a module of its own, kept out of the state dict (timm's keys stay as they are)
        object.__setattr__(self, "_embedding", _Embedding(vit))

    # ------------------------------------------------------------------ the interface DTME / Recon use
    @property
    def blocks(self) -> nn.Sequential:
        """timm's blocks (``nn.Sequential``): indexable and assignable (Recon replaces one by task copies)."""
        return self.vit.blocks

    @property
    def norm(self) -> nn.Module:
        """The final norm, applied to the last block's output."""
        return self.vit.norm

    @property
    def out_channels(self) -> list[int]:
        return [self.embed_dim] * len(self.out_indices)

    @property
    def num_patches(self) -> int:
        return self.grid[0] * self.grid[1]

    def token_slices(self) -> dict[str, slice]:
        """Token positions by kind: ``cls`` (class token), ``dist`` (DeiT's distillation token), ``reg``
        (register tokens), ``prefix`` (all prefix tokens), ``patch`` (the patch tokens); empty slices for kinds
        the model lacks."""
        names = self.prefix_token_names

        def span(pred) -> slice:
            idx = [i for i, n in enumerate(names) if pred(n)]
            return slice(idx[0], idx[-1] + 1) if idx else slice(0, 0)

        p = self.num_prefix_tokens
        return {
            "cls": span(lambda n: n == "cls"),
            "dist": span(lambda n: n == "dist"),
            "reg": span(lambda n: n.startswith("reg")),
            "prefix": slice(0, p),
            "patch": slice(p, p + self.num_patches),
        }

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image (B, 3, H, W) -> tokens (B, P + N, D): patch embedding, prefix tokens, position embeddings and
        ``norm_pre`` (CLIP's pre-norm), exactly as timm's ``forward_intermediates`` before the blocks."""
        if tuple(x.shape[-2:]) != self.img_size:
            raise MtlkitError(
                f"input size {tuple(x.shape[-2:])} differs from the model's img_size {self.img_size}; "
                "resize the input or build the model for that size"
            )
        return self._embedding(x)

    def gramian_modules(self) -> list[nn.Module]:
        """The modules a forward calls, which together own every parameter once: the embedding, the blocks,
        the final norm (TorchJD's autogram engine hooks their forward; timm's ``VisionTransformer`` itself is
        never called, its blocks run one by one). The embedding view is rebuilt here, so that it holds the
        current parameter objects even after they were replaced (``load_state_dict(assign=True)``)."""
        object.__setattr__(self, "_embedding", _Embedding(self.vit))
        return [self._embedding, self.vit.blocks, self.vit.norm]

    def tokens_to_map(self, tokens: torch.Tensor, index: int) -> torch.Tensor:
        """Block ``index``'s output tokens -> the feature map (B, D, h, w) of its patch tokens (the last block's
        output through the final norm)."""
        if index == len(self.blocks) - 1:
            tokens = self.vit.norm(tokens)
        patches = tokens[:, self.num_prefix_tokens : self.num_prefix_tokens + self.num_patches]
        b, _, d = patches.shape
        return patches.transpose(1, 2).reshape(b, d, *self.grid)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = self.embed(x)
        feats = []
        for i, blk in enumerate(self.blocks):
            h = blk(h)
            if i in self.out_indices:
                feats.append(self.tokens_to_map(h, i))
        return feats

    def last_layer_parameters(self) -> list[nn.Parameter]:
        """The last shared layer: the last block and the final norm (AvgNorm / GradNorm ``params=last``)."""
        return list(self.blocks[-1].parameters()) + list(self.vit.norm.parameters())


class _Embedding(nn.Module):
    """timm's embedding stage (patch embedding, prefix tokens, position embeddings, ``norm_pre``) as one callable
    module owning the same parameter objects as the ``VisionTransformer`` (a view, not a copy)."""

    def __init__(self, vit: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "vit", vit)  # not a child: its parameters are listed below, once
        for name, p in vit.named_parameters(recurse=False):
            self.register_parameter(name, p)
        self.patch_embed = vit.patch_embed
        self.norm_pre = vit.norm_pre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        vit = self.vit
        return vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(x))))
