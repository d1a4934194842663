"""TaskPrompter: spatial-channel multi-task prompting (Ye & Xu, ICLR 2023) on any timm-style ViT.

Follows prismformore/Multi-Task-Transformer ``TaskPrompter/models/transformers/taskprompter.py``
(``Attention``, ``Block``, ``TaskPrompter.forward`` / ``cal_task_feature``, ``ConvHead``),
``TaskPrompter/models/taskprompter_wrapper.py`` and the configs
``TaskPrompter/configs/nyud/nyud_vitLp16_taskprompter.yml`` (embed_dim 768, final_embed_dim 768,
chan_nheads 16, use_ctr off), ``pascal/pascal_vitLp16_taskprompter.yml`` (300, 350, 1, on) and
``pascal/pascal_vitBp16_taskprompter.yml`` (780, 1024, 16, on); prompt_len 1, head ``conv``.

The ViT's own blocks run with T task prompts (one learnable (T, D) tensor, init N(1, 1) truncated) prepended
to the patch tokens (the class token is dropped, as the official model has none):

- spatial attention: the block's attention over ``cat(prompts, patches)`` (pretrained qkv / proj);
- channel attention: each prompt is mapped to one value per patch (``token_trans``: D -> H*W), and attends
  over the channels of the normed patch tokens in ``chan_nheads`` spatial windows; the prompts are updated
  by ``token_trans1`` (H*W -> D) of the mapped prompts (as the official code: its attention output is unused);
- the prompts then take the block's residual and MLP like the patches.

At four layers (blocks L/4, L/2, 3L/4 and the normed output, which reuses the last block's attention) each
task reads a feature map: the patch map re-weighted per head by the task prompt's raw (unscaled, pre-softmax)
spatial attention scores, plus the map, 1x1 conv to ``embed_dim``; the same with the raw channel attention
scores per window; both concatenated and fused (1x1, 3x3-BN-GELU, 1x1 to ``final_embed_dim``). With
cross-task reweighting (``use_ctr``) each task's map becomes a learned mix of all tasks' maps weighted by
the prompt-to-prompt attention. The four maps are summed, upsampled x4, and a ConvHead (3x3-BN-GELU, 1x1)
per task predicts, upsampled to the input size.

Loss: the official TaskPrompter has no intermediate supervision on dense tasks (``intermediate_supervision:
False`` in every config), so ``task_losses`` is the main loss per task and ``aux`` stays empty.

No shared representation: the task prompts are attended to by every patch token in every block, so no
feature map is independent of task-specific parameters; ``forward_features`` / ``forward_heads`` raise and
``forward(..., return_features=True)`` returns ``None`` as the features (methods on the shared
representation, e.g. MGDA-UB, cannot run; methods on parameters can). For the same reason the prompts are
shared parameters (every task's loss reaches every prompt). Task t owns its head, its CTR convs, and, without
CTR, its per-layer feature decoders (with CTR every task reads every task's decoded maps).

DTME (``--dtme``; the paper's Tab. 5) on the prompted blocks, when the backbone is DTME's expanded wrapper
(:class:`~mtlkit.dtme.ExpandedBackbone`, whose modules this forward applies itself). Our choices, as the
official DTME code for TaskPrompter is not public:

- layer l's token set X_l (what the calibration measures and TM / TE act on) is the output sequence of the
  official ``Block``: the T prompts and the N patch tokens (TE tokens of layer l - 1 cut). The calibration
  hooks parameterless taps on it (``token_entry`` before block 0, ``token_taps[l]`` after block l);
- TM of layer l: per stream, the affine map of (prompts, patches); TE of layer l: m task tokens after the
  patches, keys / values of block l + 1's spatial attention (and through its residual and MLP), dropped
  after it; they are kept out of the channel attention (which reshapes the patches onto the grid) and out
  of the raw spatial scores the task maps are weighted by;
- fork at the first expanded layer: patches AND prompts are copied into T streams (task-major, one batched
  call per block) and every stream keeps ALL T prompts, so each stream runs the unexpanded function until a
  module changes it (identity TM = the unexpanded model) and task t's map stays defined (prompt t of stream
  t); task t's maps are read from stream t only: its prompt's scores, and with CTR every task's decoded map
  of stream t's tokens mixed by stream t's prompt-to-prompt scores. So task t's loss reaches only stream t
  and DTME's modules of task t are task t's parameters (``separate_task_streams``). The decoders run once
  per stream, so BatchNorm statistics stay per stream (with CTR a decoder runs on every stream: its running
  statistics take T updates per step);
- Recon's per-task block copies are refused (the blocks are run here with the prompts).

Where we chose: timm layer-scale / drop-path / q-k norms of the backbone's blocks are applied to both the
patches and the prompts (ViT-B/L have none); the unused channel-attention output is not computed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.errors import MtlkitError
from mtlkit.models.arch._backbone import (
    maybe_identity,
    vit_blocks,
    vit_grid,
    vit_last_layer_parameters,
    vit_patch_size,
)
from mtlkit.models.arch._base import ArchModel, Outputs
from mtlkit.models.arch._blocks import resize_to


class ConvHead(nn.Module):
    """conv3x3 - BN - GELU - 1x1 (TaskPrompter's ``ConvHead``)."""

    def __init__(self, channels: int, cout: int) -> None:
        super().__init__()
        self.mt_proj = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.GELU())
        nn.init.trunc_normal_(self.mt_proj[0].weight, std=0.02)
        self.linear_pred = nn.Conv2d(channels, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_pred(self.mt_proj(x))


def _fork(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, ...) -> n task streams stacked task-major (n*B, ...), as DTME's forked backbone."""
    return x.unsqueeze(0).expand(n, *x.shape).reshape(n * x.shape[0], *x.shape[1:])


def _default_layers(depth: int) -> list[int]:
    """0-based blocks whose outputs are read: L/4, L/2, 3L/4 (official ``select_list``) and the last."""
    return [depth // 4 - 1, depth // 2 - 1, 3 * depth // 4 - 1, depth - 1]


class TaskPrompter(ArchModel):
    """TaskPrompter on a ViT backbone (token-level access: ``embed``, ``blocks``, ``norm``).

    Args:
        backbone: a ViT with ``embed(x)``, ``blocks``, ``num_prefix_tokens``, ``norm`` and a patch size.
        tasks: ``{task: output channels}``.
        img_size: the input size (the channel prompts have one value per patch: the model is built for it);
            default: the backbone's own grid.
        embed_dim: per-layer decoded width (``embed_dim`` in the configs).
        final_embed_dim: fused width, the heads' input (``final_embed_dim``).
        chan_nheads: channel-attention windows (a square number; the token grid must split evenly).
        use_ctr: cross-task reweighting.
        layers: the four 0-based blocks read, increasing, ending with the last block (default L/4, L/2, 3L/4,
            last: the official ``select_list`` and the normed output).
        official_unused: keep the last block's ``token_trans1``, which the official model builds but never
            reaches (the prompts leaving the last block are not read); ``False`` drops it (DDP without
            ``find_unused_parameters``).
    """

    arch = "taskprompter"
    has_shared_representation = False

    def __init__(
        self,
        backbone: nn.Module,
        tasks: Mapping[str, int],
        img_size: tuple[int, int] | None = None,
        embed_dim: int = 768,
        final_embed_dim: int = 768,
        chan_nheads: int = 16,
        use_ctr: bool = False,
        layers: Sequence[int] | None = None,
        official_unused: bool = True,
    ) -> None:
        super().__init__(backbone, tasks)
        blocks = vit_blocks(backbone)
        self.grid = vit_grid(backbone, tuple(img_size) if img_size is not None else None)
        self.patch_size = vit_patch_size(backbone)
        self.num_prefix_tokens = int(getattr(backbone, "num_prefix_tokens", 1))
        dim = int(blocks[0].norm1.normalized_shape[0])
        heads = int(blocks[0].attn.num_heads)
        self.dim, self.num_heads = dim, heads
        n_pix = self.grid[0] * self.grid[1]
        side = math.isqrt(chan_nheads)
        if side * side != chan_nheads or self.grid[0] % side or self.grid[1] % side:
            raise MtlkitError(
                f"chan_nheads {chan_nheads} must be a square whose root divides the token grid {self.grid}"
            )
        if dim % heads:
            raise MtlkitError(f"TaskPrompter needs the width {dim} divisible by the heads {heads}")
        self.chan_side = side
        self.chan_scale = (n_pix // chan_nheads) ** -0.5
        self.layers = list(layers) if layers is not None else _default_layers(len(blocks))
        depth = len(blocks)
        if len(self.layers) != 4 or self.layers[3] != depth - 1 or sorted(set(self.layers)) != self.layers:
            raise MtlkitError(
                f"TaskPrompter reads four increasing 0-based blocks, the last being the last block ({depth - 1}, "
                f"read after the final norm); got {self.layers}"
            )
        self.use_ctr = use_ctr
        nt = len(self.tasks)
        self.task_prompts = nn.Parameter(torch.empty(nt, dim))
        nn.init.trunc_normal_(self.task_prompts, mean=1.0, std=1.0)  # the official init (bounds -2, 2)
        self.token_trans = nn.ModuleList(nn.Linear(dim, n_pix) for _ in blocks)
        # the prompts leaving the last block are never read: its token_trans1 is unused (kept by default)
        self.token_trans1 = nn.ModuleList(
            nn.Linear(n_pix, dim) for _ in blocks[: len(blocks) if official_unused else len(blocks) - 1]
        )
        self.fea_decode_spa = nn.ModuleList(
            nn.ModuleDict({t: nn.Conv2d(dim, embed_dim, 1) for t in self.tasks}) for _ in range(4)
        )
        self.fea_decode_chan = nn.ModuleList(
            nn.ModuleDict({t: nn.Conv2d(dim, embed_dim, 1) for t in self.tasks}) for _ in range(4)
        )
        fe = final_embed_dim
        self.fea_fuse = nn.ModuleList(
            nn.ModuleDict(
                {
                    t: nn.Sequential(
                        nn.Conv2d(2 * embed_dim, fe, 1),
                        nn.Conv2d(fe, fe, 3, padding=1),
                        nn.BatchNorm2d(fe),
                        nn.GELU(),
                        nn.Conv2d(fe, fe, 1),
                    )
                    for t in self.tasks
                }
            )
            for _ in range(4)
        )

        def ctr() -> nn.Module:
            return nn.Sequential(nn.Conv2d(heads, heads, 1), nn.GELU(), nn.Conv2d(heads, 1, 1))

        self.ctr_attn_conv = (
            nn.ModuleList(nn.ModuleDict({t: ctr() for t in self.tasks}) for _ in range(4)) if use_ctr else None
        )
        self.heads = nn.ModuleDict({t: ConvHead(fe, c) for t, c in self.task_channels.items()})
        # parameterless taps on the block-0 input and each block's output tokens (prompts, patches, task tokens):
        # DTME's calibration hooks them (``token_entry`` / ``token_taps``), as the backbone's blocks elsewhere
        self.token_entry = nn.Identity()
        self.token_taps = nn.ModuleList(nn.Identity() for _ in blocks)
        for m in [*self.token_trans, *self.token_trans1]:  # the official _init_vit_weights for linears
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ forward
    def forward_features(self, x: torch.Tensor) -> Any:
        raise self._no_shared_representation()

    def forward_heads(
        self, feats: Any, tasks: Iterable[str] | None = None, output_size: tuple[int, int] | None = None
    ) -> Outputs:
        raise self._no_shared_representation()

    def forward(
        self, x: torch.Tensor, tasks: Iterable[str] | None = None, return_features: bool = False
    ) -> Outputs | tuple[Outputs, None]:
        names = self._select(tasks)
        size = tuple(x.shape[-2:])
        self._input_size = size  # type: ignore[assignment]
        self.aux, self.cut = {}, None
        expected = (self.grid[0] * self.patch_size[0], self.grid[1] * self.patch_size[1])
        if size != expected:
            raise MtlkitError(
                f"TaskPrompter was built for {expected[0]}x{expected[1]} inputs (its channel prompts have one "
                f"value per patch); got {size[0]}x{size[1]}: resize the input or build it with img_size={size}"
            )
        bb = self.backbone
        expanded = bool(getattr(bb, "is_expanded", False))
        base = bb.base if expanded else bb
        modulators = bb.modulators if expanded else {}
        expanders = bb.expanders if expanded else {}
        if expanded and any(not hasattr(b, "attn") for b in base.blocks):
            raise MtlkitError(
                "TaskPrompter runs the ViT blocks with its prompts and cannot run Recon's task-specific block "
                "copies; use --dtme or --arch invpt for Recon"
            )
        b, nt, n_pix = x.shape[0], len(self.tasks), self.grid[0] * self.grid[1]
        tokens = base.embed(x)[:, self.num_prefix_tokens :]
        prompts = self.task_prompts[None].expand(b, -1, -1)
        z = self.token_entry(torch.cat([prompts, tokens], 1))  # calibration's entry point (X_{-1})
        prompts, tokens = z[:, :nt], z[:, nt:]
        blocks = base.blocks
        summed: dict[str, torch.Tensor] = {}
        last = len(blocks) - 1
        streams: list[str] = []  # the task streams once forked (stacked task-major, T*B sequences)
        norm = maybe_identity(getattr(base, "norm", None))
        for i, blk in enumerate(blocks):
            key = str(i)
            tokens, prompts, attn = self._block(i, blk, tokens, prompts)
            # X_i (+ the task tokens of layer i - 1); the prompts leaving the last block are never read (detached:
            # the last token_trans1 stays unreached, as in the official model)
            z = self.token_taps[i](torch.cat([prompts.detach() if i == last else prompts, tokens], 1))
            prompts, tokens = z[:, :nt], z[:, nt : nt + n_pix]  # the task tokens of layer i - 1 are dropped
            if key in modulators:  # TM of layer i on X_i = (prompts, patches), per stream
                if not streams:
                    streams, prompts, tokens = list(names), _fork(prompts, len(names)), _fork(tokens, len(names))
                z = modulators[key](torch.cat([prompts, tokens], 1), streams)
                prompts, tokens = z[:, :nt], z[:, nt:]
            if i in self.layers[:3]:
                self._accumulate(summed, self._stream_features(tokens, attn, self.layers.index(i), streams, b))
            if i == last:
                self._accumulate(summed, self._stream_features(norm(tokens), attn, 3, streams, b))
            if key in expanders:  # TE of layer i: task tokens after the patches, read by block i + 1
                if not streams:
                    streams, prompts, tokens = list(names), _fork(prompts, len(names)), _fork(tokens, len(names))
                tokens = expanders[key](tokens, streams)
        out = {}
        for t in names:
            f = F.interpolate(summed[t], scale_factor=4, mode="bilinear", align_corners=False)
            out[t] = resize_to(self.heads[t](f), size)
        self.aux, self.cut = {}, None
        return (out, None) if return_features else out

    def _stream_features(
        self, x: torch.Tensor, attn: tuple[torch.Tensor, torch.Tensor], il: int, streams: list[str], b: int
    ) -> dict[str, torch.Tensor]:
        """Task maps of layer ``il``: from the one stream, or task t's from stream t (its patch tokens, and
        the scores of the prompts it carries; the attention of a block before the fork is shared)."""
        if not streams:
            return self._task_features(x, attn, il)
        out = {}
        for s, t in enumerate(streams):
            part = [a if a.shape[0] == b else a[s * b : (s + 1) * b] for a in attn]
            out[t] = self._task_features(x[s * b : (s + 1) * b], (part[0], part[1]), il, only=t)[t]
        return out

    @staticmethod
    def _accumulate(summed: dict[str, torch.Tensor], feats: dict[str, torch.Tensor]) -> None:
        for t, f in feats.items():
            summed[t] = f if t not in summed else summed[t] + f

    def _block(
        self, i: int, blk: nn.Module, x: torch.Tensor, prompts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One ViT block with the task prompts: official ``Block.forward`` + ``Attention.forward``."""
        a = blk.attn
        nt = prompts.shape[1]
        xn, pn = blk.norm1(x), blk.norm1(prompts)
        z = torch.cat([pn, xn], dim=1)
        b, n, c = z.shape
        qkv = a.qkv(z).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = maybe_identity(getattr(a, "q_norm", None))(q), maybe_identity(getattr(a, "k_norm", None))(k)
        raw_spa = q @ k.transpose(-2, -1)  # (B, H, T+N, T+N), unscaled as the official "raw" scores
        scale = getattr(a, "scale", (c // self.num_heads) ** -0.5)
        att = (raw_spa * scale).softmax(dim=-1)
        att = maybe_identity(getattr(a, "attn_drop", None))(att)
        y = (att @ v).transpose(1, 2).reshape(b, n, c)
        y = maybe_identity(getattr(a, "norm", None))(y)
        y = maybe_identity(getattr(a, "proj_drop", None))(a.proj(y))
        p_attn, x_attn = y[:, :nt], y[:, nt:]
        # channel attention of the prompts over the patch tokens' channels, in chan_side x chan_side windows
        chan_prompts = self.token_trans[i](pn)  # (B, T, N)
        s = self.chan_side
        gh, gw = self.grid
        wh, ww, n_pix = gh // s, gw // s, gh * gw
        qc = chan_prompts.reshape(b, nt, s, wh, s, ww).permute(0, 2, 4, 1, 3, 5).reshape(b, s * s, nt, wh * ww)
        kc = xn[:, :n_pix].transpose(1, 2).reshape(b, c, s, wh, s, ww)
        kc = kc.permute(0, 2, 4, 1, 3, 5).reshape(b, s * s, c, wh * ww)
        raw_chan = (qc @ kc.transpose(-2, -1)).reshape(b, s, s, nt, c).permute(0, 3, 4, 1, 2)  # (B, T, C, s, s)
        if i < len(self.token_trans1):
            p_attn = p_attn + self.token_trans1[i](chan_prompts)
        ls1, ls2 = maybe_identity(getattr(blk, "ls1", None)), maybe_identity(getattr(blk, "ls2", None))
        dp1 = maybe_identity(getattr(blk, "drop_path1", getattr(blk, "drop_path", None)))
        dp2 = maybe_identity(getattr(blk, "drop_path2", getattr(blk, "drop_path", None)))
        x = x + dp1(ls1(x_attn))
        x = x + dp2(ls2(blk.mlp(blk.norm2(x))))
        prompts = prompts + dp1(ls1(p_attn))
        prompts = prompts + dp2(ls2(blk.mlp(blk.norm2(prompts))))
        # task tokens (DTME's TE, after the patches) take part in the attention, not in the task maps' scores
        return x, prompts, (raw_spa[:, :, : nt + n_pix, : nt + n_pix], raw_chan)

    def _task_features(
        self, x: torch.Tensor, attn: tuple[torch.Tensor, torch.Tensor], il: int, only: str | None = None
    ) -> dict[str, torch.Tensor]:
        """Official ``cal_task_feature``: task maps from the prompts' raw spatial and channel attention
        (``only``: just that task's map, which with CTR mixes every task's decoded map of the same tokens)."""
        raw_spa, raw_chan = attn
        b, n, c = x.shape
        gh, gw = self.grid
        nt = len(self.tasks)
        fmap = x.transpose(1, 2).reshape(b, c, gh, gw)
        hc = c // self.num_heads
        s = self.chan_side
        feats = {}
        for j, t in enumerate(self.tasks):
            if only is not None and self.ctr_attn_conv is None and t != only:
                continue
            w_spa = raw_spa[:, :, j, nt:].reshape(b, self.num_heads, gh, gw)
            spa = fmap * w_spa.repeat_interleave(hc, dim=1) + fmap
            spa = self.fea_decode_spa[il][t](spa)
            w_chan = raw_chan[:, j].repeat_interleave(gh // s, dim=2).repeat_interleave(gw // s, dim=3)
            chan = self.fea_decode_chan[il][t](fmap * w_chan + fmap)
            feats[t] = self.fea_fuse[il][t](torch.cat([spa, chan], dim=1))
        if self.ctr_attn_conv is not None:
            mixed = {}
            for j, t in enumerate(self.tasks):
                if only is not None and t != only:
                    continue
                w = self.ctr_attn_conv[il][t](raw_spa[:, :, j : j + 1, :nt])  # (B, 1, 1, T)
                mixed[t] = sum(w[:, :, :, k : k + 1] * feats[a] for k, a in enumerate(self.tasks))
            feats = mixed  # type: ignore[assignment]
        return feats

    # ------------------------------------------------------------------ parameter split
    def _task_modules(self, task: str) -> list[nn.Module | nn.Parameter]:
        mods: list[nn.Module | nn.Parameter] = [self.heads[task]]
        if self.ctr_attn_conv is not None:
            mods += [m[task] for m in self.ctr_attn_conv]  # type: ignore[index]
        else:
            for group in (self.fea_decode_spa, self.fea_decode_chan, self.fea_fuse):
                mods += [m[task] for m in group]  # type: ignore[index]
        return mods

    def _last_encoder_parameters(self) -> list[nn.Parameter]:
        return vit_last_layer_parameters(self.backbone)
