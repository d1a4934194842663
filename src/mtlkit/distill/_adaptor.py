"""The per-task URL adaptor: one bias-free 1x1 convolution per distilled student feature, Xavier-normal init.

Official code (VICO-UoE/UniversalRepresentations, ``DensePred/nyu_url.py`` lines 50-69): the SegNet student
exposes two feature maps (the 512-channel bottleneck and the 64-channel last decoder map) and the adaptor
holds ``Conv2d(512, 64, 1, bias=False)`` and ``Conv2d(64, 64, 1, bias=False)``, one for each, both mapping
into the teacher's 64 channels, initialised with ``nn.init.xavier_normal_``. Here the channel counts come
from the model (``in_channels``: one entry per distilled student feature, ``out_channels``: the teacher's).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mtlkit.errors import MtlkitError


class URLAdaptor(nn.Module):
    """Maps student features ``[(B, C_i, ...)]`` to the teacher's channel count: ``[(B, out_channels, ...)]``.

    ``generator``: the ``torch.Generator`` the Xavier init draws from (``None``: the global one, as the
    official code; the feature-distance probe passes its own so that it consumes no global randomness).
    Features may be maps ``(B, C, H, W)`` or vectors ``(B, C)`` (a 1x1 convolution is then a linear map).
    """

    def __init__(self, in_channels: int | Sequence[int], out_channels: int,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        ins = [int(in_channels)] if isinstance(in_channels, int) else [int(c) for c in in_channels]
        if not ins or min(ins) < 1 or int(out_channels) < 1:
            raise MtlkitError(f"URL adaptor needs positive channel counts, got in={ins} out={out_channels}")
        self.in_channels = ins
        self.out_channels = int(out_channels)
        # with an own generator, skip nn.Conv2d's default init: it would draw from the global generator
        make = (lambda c: nn.Conv2d(c, self.out_channels, 1, bias=False)) if generator is None else (
            lambda c: nn.utils.skip_init(nn.Conv2d, c, self.out_channels, 1, bias=False))
        self.convs = nn.ModuleList(make(c) for c in ins)
        for conv in self.convs:  # nyu_url.py lines 55-57
            nn.init.xavier_normal_(conv.weight, generator=generator)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(feats) != len(self.convs):
            raise MtlkitError(f"URL adaptor built for {len(self.convs)} feature(s), got {len(feats)}")
        out = []
        for conv, f in zip(self.convs, feats, strict=True):
            f = f.to(conv.weight.dtype)  # e.g. half-precision features outside autocast (autocast re-casts)
            if f.dim() == 2:
                out.append(conv(f[:, :, None, None])[:, :, 0, 0])
            elif f.dim() == 4:
                out.append(conv(f))
            else:
                raise MtlkitError(
                    f"URL distils feature maps (B, C, H, W) or vectors (B, C), got shape {tuple(f.shape)}; "
                    "expose a map (e.g. tokens reshaped to a grid) as the distilled feature"
                )
        return out

    @torch.no_grad()
    def set_identity(self) -> URLAdaptor:
        """Identity weights (needs in == out channels): the adapted features equal the inputs (tests, warm starts)."""
        for conv in self.convs:
            if conv.in_channels != conv.out_channels:
                raise MtlkitError(f"identity adaptor needs equal channels, got {conv.in_channels}->{conv.out_channels}")
            conv.weight.copy_(torch.eye(conv.out_channels, dtype=conv.weight.dtype)[:, :, None, None])
        return self
