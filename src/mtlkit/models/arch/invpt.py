"""InvPT: Inverted Pyramid multi-task Transformer (Ye & Xu, ECCV 2022) on any ViT backbone.

Follows prismformore/Multi-Task-Transformer ``InvPT/models/transformers/invpt.py`` (UpEmbed, SelfAttention,
InvPTBlock, InvPTStage, InvPT), ``InvPT/models/transformers/transformer_decoder.py`` (preliminary decoder,
intermediate heads, ``scale_embed`` skips, the stage spec), ``InvPT/models/transformer_net.py`` (heads and
upsampling), ``InvPT/losses/loss_schemes.py`` and configs ``InvPT/configs/{nyud,pascal}/*_vitLp16.yml``
(embed_dim 512, PRED_OUT_NUM_CONSTANT 64, mtt_resolution_downsample_rate 2, intermediate supervision on).

The backbone's last four maps (ViT-L: blocks 6, 12, 18 and the normed last one, all at 1/16) feed the decoder:

- the last map, resized to 1/32, goes through a per-task preliminary decoder (two conv3x3-BN-ReLU to
  ``embed_dim``) and a 1x1 intermediate head (the intermediate prediction, supervised);
- per task, ``cat(features, intermediate prediction)`` -> 1x1 conv to D = embed_dim + 64 channels;
- three InvPT stages at 1/32, 1/16, 1/8 with widths D, D/2, D/4: stages 2 and 3 upsample each task's map
  (UpEmbed: x2 bilinear, two dilated conv3x3-BN-ReLU) and add a backbone skip (conv3x3 of map 2 at 1/16,
  transposed conv of map 1 to 1/8). Each stage is one transformer block over the tokens of all tasks jointly
  (pre-norm, MLP ratio 4): queries from a per-task depthwise conv3x3-BN with stride 2, keys / values average-
  pooled by 2, 4, 8, scale dim^-0.5, two heads; the previous stage's attention scores, upsampled x2 along the
  queries, are fused with the current ones by a 1x1 conv over the heads ("attention message passing"); the
  attention output is upsampled back to the stage resolution;
- after each stage a LayerNorm over all tasks' channels, a per-task 1x1 conv to D (stages 2, 3), resize to
  1/4, summed over the stages; conv3x3-BN-ReLU per task; a 1x1 head per task, upsampled to the input.

Loss (``MultiTaskLoss`` with ``intermediate_supervision``): total = Σ_t w_t (L_t(out) + L_t(inter)), the
intermediate prediction upsampled to the input size. ``task_losses`` gives each task its main term + its
intermediate term (weight 1, ``aux_weight``); ``intermediate_supervision=False`` drops it.

Unused official parameters: the official decoder builds modules it never uses (``scale_embed[2]``, the
stage-1 ``redu_chan`` convs, the first stage's ``fuse_attn``, ``norm_mt``). ``official_unused=True`` (the
default) keeps them, so parameter counts (1.3-2.5% of the model) and state-dict shapes match the official
model; they get no gradient. ``False`` leaves them out.

Where we chose: sizes are resized to the target stage size rather than scaled by exactly 2 (identical when
the token grid is even; the official code fails on odd grids); decoder drop-path is 0 as in the official
code (its ``torch.linspace(0, 0.15, 1)`` is ``[0]``); BatchNorm instead of SyncBatchNorm.

Parameter split: the decoder's attention mixes all tasks' tokens, so everything up to it is shared
(including the per-task preliminary decoders, intermediate heads and UpEmbeds, whose outputs every task
attends to). Task t owns its stage-2/3 ``redu_chan`` convs, its final conv and its head. Balancing cut:
``{t: [task t's slice of each stage's normed output, its intermediate prediction]}``. With DTME the encoder
forks into task streams and task t's decoder branch reads stream t, but the joint attention lets every task's
loss reach every stream, so DTME's per-task modules count as shared parameters here
(``separate_task_streams = False``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.errors import MtlkitError
from mtlkit.models.arch._backbone import out_channels, vit_last_layer_parameters
from mtlkit.models.arch._base import ArchModel, Outputs
from mtlkit.models.arch._blocks import ConvBNReLU, resize_to


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, HW, C)


def _unflat(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *size)


class UpEmbed(nn.Module):
    """x2 bilinear upsampling (to ``size``), then two dilated conv3x3 (dilation 2) - BN - ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, dilation: int = 2) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(cin, cout, kernel, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, kernel, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.proj(resize_to(x, size))


class SelfAttention(nn.Module):
    """Joint attention over all tasks' tokens with conv queries, pooled keys / values and message passing."""

    def __init__(self, num_tasks: int, dim: int, num_heads: int, kv_stride: int, fuse: bool, q_stride: int = 2) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = dim**-0.5  # the official scale uses the full width, not the head width
        self.kv_stride = kv_stride
        self.conv_proj_q = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(dim, dim, 3, padding=1, stride=q_stride, bias=False, groups=dim), nn.BatchNorm2d(dim)
            )
            for _ in range(num_tasks)
        )
        self.proj_q = nn.Linear(dim, dim)
        self.proj_k = nn.Linear(dim, dim)
        self.proj_v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.fuse_attn = nn.Conv2d(2 * num_heads, num_heads, 1) if fuse else None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(
        self, maps: list[torch.Tensor], prev: tuple[torch.Tensor, tuple[int, int]] | None
    ) -> tuple[torch.Tensor, tuple[int, int], tuple[torch.Tensor, tuple[int, int]]]:
        """maps: each task's normed map -> (output tokens at the query grid, query grid, (scores, grid))."""
        qs = [conv(m) for conv, m in zip(self.conv_proj_q, maps, strict=True)]
        qsize = tuple(qs[0].shape[-2:])
        kv = [F.avg_pool2d(m, self.kv_stride, self.kv_stride, ceil_mode=True) for m in maps]
        q = self._heads(self.proj_q(torch.cat([_flat(x) for x in qs], 1)))
        kv_tokens = torch.cat([_flat(x) for x in kv], 1)
        k = self._heads(self.proj_k(kv_tokens))
        v = self._heads(self.proj_v(kv_tokens))
        score = (q @ k.transpose(-2, -1)) * self.scale  # (B, H, T*Nq, T*Nk)
        if prev is not None and self.fuse_attn is not None:
            res, (ph, pw) = prev
            b, h, _, lk = res.shape
            chunks = []
            for r in res.split(ph * pw, dim=2):  # one chunk of query rows per task
                r = r.reshape(b * h, ph, pw, lk).permute(0, 3, 1, 2)
                r = F.interpolate(r, size=qsize, mode="bilinear", align_corners=False)
                chunks.append(r.permute(0, 2, 3, 1).reshape(b, h, -1, lk))
            score = self.fuse_attn(torch.cat([score, torch.cat(chunks, dim=2)], dim=1))
        attn = score.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).flatten(2)
        return self.proj(out), qsize, (score, qsize)  # type: ignore[return-value]


class InvPTBlock(nn.Module):
    """Pre-norm transformer block over the concatenated tokens of all tasks (one InvPT stage's block)."""

    def __init__(self, num_tasks: int, dim: int, num_heads: int, kv_stride: int, fuse: bool, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(num_tasks, dim, num_heads, kv_stride, fuse)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(
        self, maps: list[torch.Tensor], prev: tuple[torch.Tensor, tuple[int, int]] | None
    ) -> tuple[list[torch.Tensor], tuple[torch.Tensor, tuple[int, int]]]:
        size = tuple(maps[0].shape[-2:])
        n = size[0] * size[1]
        x = torch.cat([_flat(m) for m in maps], 1)
        normed = [_unflat(t, size) for t in self.norm1(x).split(n, dim=1)]
        a, qsize, message = self.attn(normed, prev)
        nq = qsize[0] * qsize[1]
        a = torch.cat([_flat(resize_to(_unflat(t, qsize), size)) for t in a.split(nq, dim=1)], 1)
        x = x + a
        x = x + self.mlp(self.norm2(x))
        return [_unflat(t, size) for t in x.split(n, dim=1)], message


class InvPT(ArchModel):
    """InvPT decoder on the last four maps of a ViT backbone.

    Args:
        backbone: a ViT returning four (or more) maps at one resolution (e.g. blocks 6/12/18/24 of ViT-L).
        tasks: ``{task: output channels}``.
        embed_dim: decoder width before the prediction channels (512 as published).
        pred_channels: ``PRED_OUT_NUM_CONSTANT`` (64): the stage-1 width is ``embed_dim + pred_channels``.
        downsample: ``mtt_resolution_downsample_rate`` (2): decoder input resolution = token grid / 2.
        num_heads, kv_strides, mlp_ratio: the stage spec (2 heads; 2, 4, 8; 4).
        intermediate_supervision: add the intermediate predictions' losses (official: on).
        official_unused: keep the official code's unused modules (see the module docstring).
    """

    arch = "invpt"
    #: the joint decoder attends over every task's stream: DTME's per-task encoder modules reach all tasks
    separate_task_streams = False

    def __init__(
        self,
        backbone: nn.Module,
        tasks: Mapping[str, int],
        embed_dim: int = 512,
        pred_channels: int = 64,
        downsample: int = 2,
        num_heads: int = 2,
        kv_strides: Sequence[int] = (2, 4, 8),
        mlp_ratio: float = 4.0,
        intermediate_supervision: bool = True,
        official_unused: bool = True,
    ) -> None:
        super().__init__(backbone, tasks)
        ch = out_channels(backbone)
        if len(ch) < 4:
            raise MtlkitError(f"InvPT needs four backbone maps; the backbone returns {len(ch)}")
        self._first = len(ch) - 4
        c0, c1, c2, c3 = ch[self._first :]
        self.downsample = downsample
        self.intermediate_supervision = intermediate_supervision
        d = embed_dim + pred_channels
        dims = [d, d // 2, d // 4]
        self.dims = dims
        nt = len(self.tasks)
        tc = self.task_channels
        self.preliminary_decoder = nn.ModuleDict(
            {t: nn.Sequential(ConvBNReLU(c3, c3), ConvBNReLU(c3, embed_dim)) for t in self.tasks}
        )
        self.intermediate_head = nn.ModuleDict({t: nn.Conv2d(embed_dim, c, 1) for t, c in tc.items()})
        self.mix_proj = nn.ModuleDict({t: nn.Conv2d(embed_dim + c, d, 1) for t, c in tc.items()})
        # backbone skips: map 1 -> 1/8 (transposed conv), map 2 -> 1/16; the official map-3 skip is never used
        self.scale_embed = nn.ModuleList(
            [
                nn.ConvTranspose2d(c0, dims[2], 3, stride=2, padding=1, output_padding=1),
                nn.Conv2d(c1, dims[1], 3, padding=1),
            ]
            + ([nn.Conv2d(c2, dims[0], 3, padding=1)] if official_unused else [])
        )
        self.patch_embed = nn.ModuleList(
            [nn.ModuleList()] + [nn.ModuleList(UpEmbed(dims[i - 1], dims[i]) for _ in self.tasks) for i in (1, 2)]
        )
        self.blocks = nn.ModuleList(
            InvPTBlock(nt, dims[i], num_heads, kv_strides[i], fuse=i > 0 or official_unused, mlp_ratio=mlp_ratio)
            for i in range(3)
        )
        self.norm_mts = nn.ModuleList(nn.LayerNorm(dims[i] * nt) for i in range(3))
        self.redu_chan = nn.ModuleList(
            nn.ModuleDict({t: nn.Conv2d(dims[i], d, 1) for t in self.tasks}) if i > 0 or official_unused else None
            for i in range(3)
        )
        self.norm_mt = nn.LayerNorm(dims[2] * nt) if official_unused else None
        self.mt_proj = nn.ModuleDict(
            {t: nn.Sequential(nn.Conv2d(d, d, 3, padding=1), nn.BatchNorm2d(d), nn.ReLU(True)) for t in self.tasks}
        )
        self.heads = nn.ModuleDict({t: nn.Conv2d(d, c, 1) for t, c in tc.items()})
        self._init_weights()

    def _init_weights(self) -> None:
        """As InvPTStage / TransformerDecoder: trunc-normal(0.02) linears and final convs, unit norms."""
        for m in [*self.blocks.modules(), *self.patch_embed.modules(), *self.norm_mts]:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for seq in self.mt_proj.values():
            nn.init.trunc_normal_(seq[0].weight, std=0.02)

    # ------------------------------------------------------------------ forward
    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor] | dict[str, list[torch.Tensor]]:
        """The encoder output: the backbone's last four maps, or ``{task: maps}`` once DTME forks it."""
        self._input_size = tuple(x.shape[-2:])
        feats = self.backbone(x)
        if isinstance(feats, dict):
            return {t: list(f)[self._first :] for t, f in feats.items()}
        return list(feats)[self._first :]

    def _decode(self, feats: Any) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Backbone maps (or ``{task: maps}``) -> (final features per task at 1/4, intermediate predictions)."""
        prepared: dict[int, tuple[torch.Tensor, dict[int, torch.Tensor]]] = {}

        def prepare(maps: list[torch.Tensor]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
            key = id(maps[-1])
            if key not in prepared:
                f0, f1, _, f3 = maps[-4:]
                h, w = f3.shape[-2:]
                x = resize_to(f3, (h // self.downsample, w // self.downsample))
                prepared[key] = (x, {1: self.scale_embed[1](f1), 2: self.scale_embed[0](f0)})
            return prepared[key]

        inter, maps, skips = {}, [], []
        for t in self.tasks:
            x, skip = prepare(feats[t] if isinstance(feats, dict) else feats)
            skips.append(skip)
            feat = self.preliminary_decoder[t](x)
            inter[t] = self.intermediate_head[t](feat)
            maps.append(self.mix_proj[t](torch.cat([feat, inter[t]], 1)))
        s2 = skips[0][2].shape[-2:]
        target = (2 * s2[0], 2 * s2[1])
        summed: list[torch.Tensor | None] = [None] * len(self.tasks)
        cut: dict[str, list[torch.Tensor]] = {t: [] for t in self.tasks}
        message = None
        for i in range(3):
            if i > 0:
                size = tuple(skips[0][i].shape[-2:])
                maps = [pe(m, size) + sk[i] for pe, m, sk in zip(self.patch_embed[i], maps, skips, strict=True)]
            maps, message = self.blocks[i](maps, message)
            size = tuple(maps[0].shape[-2:])
            cat = torch.cat(maps, 1)
            cat = _unflat(self.norm_mts[i](_flat(cat)), size)
            for j, (t, part) in enumerate(zip(self.tasks, cat.split(self.dims[i], dim=1), strict=True)):
                cut[t].append(part)
                if i > 0:
                    part = self.redu_chan[i][t](part)
                part = resize_to(part, target)
                summed[j] = part if summed[j] is None else summed[j] + part
        out = {t: self.mt_proj[t](s) for t, s in zip(self.tasks, summed, strict=True)}  # type: ignore[arg-type]
        self.cut = {t: cut[t] + [inter[t]] for t in self.tasks}
        return out, inter

    def forward_heads(
        self, feats: Any, tasks: Iterable[str] | None = None, output_size: tuple[int, int] | None = None
    ) -> Outputs:
        """``feats``: the four maps, or ``{task: maps}`` when the encoder forks per task (DTME): each task's
        branch of the decoder (preliminary decoder, skips) then reads its own stream; the decoder still
        attends over all tasks jointly, so every task is decoded whatever ``tasks`` asks for."""
        names = self._select(tasks)
        size = self._output_size(output_size)
        task_feats, inter = self._decode(feats)
        self.cut = {t: self.cut[t] for t in names}
        out = {t: resize_to(self.heads[t](task_feats[t]), size) for t in names}
        self.aux = {t: {"inter": resize_to(inter[t], size)} for t in names} if self.intermediate_supervision else {}
        return out

    def _task_modules(self, task: str) -> list[nn.Module | nn.Parameter]:
        mods: list[nn.Module | nn.Parameter] = [self.heads[task], self.mt_proj[task]]
        mods += [self.redu_chan[i][task] for i in (1, 2)]  # type: ignore[index]
        return mods

    def _last_encoder_parameters(self) -> list[nn.Parameter]:
        return vit_last_layer_parameters(self.backbone)
