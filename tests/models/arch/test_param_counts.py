"""Parameter counts at the published configurations, built on the meta device (no memory, no weights).

``Published.official_params``: counted from the official code's module definitions
(SimonVandenhende/Multi-Task-Learning-PyTorch ``models/{mtan,mti_net,padnet,aspp,seg_hrnet}.py``;
prismformore/Multi-Task-Transformer ``InvPT/models/...``, ``TaskPrompter/models/...``) with the configs'
task heads. ``OURS``: this package on timm backbones. The table is docs/architectures.md.
"""

from __future__ import annotations

import pytest
import torch

from mtlkit.errors import MtlkitError
from mtlkit.models.arch import ARCHS, PUBLISHED, InvPT, count_parameters, published

from ._support import TimmCNN, TimmViT

# ours differ from the official TaskPrompter by timm's (unused) class token: 1024 (ViT-L) / 768 (ViT-B)
OURS = {key: p.official_params for key, p in PUBLISHED.items()}
OURS.update(
    {
        "taskprompter-vitL-nyud": 513_506_733,
        "taskprompter-vitL-pascal": 401_105_888,
        "taskprompter-vitB-pascal": 418_332_982,
    }
)


def build_published(key: str):
    p = PUBLISHED[key]
    if p.backbone.startswith("vit"):
        backbone = TimmViT(p.backbone, img_size=p.img_size, **p.backbone_kwargs)
    else:
        backbone = TimmCNN(p.backbone, **p.backbone_kwargs)
    kwargs = dict(p.kwargs)
    if p.arch == "taskprompter":
        kwargs["img_size"] = p.img_size
    return ARCHS.get(p.arch)(backbone, p.official_tasks, **kwargs)


@pytest.mark.parametrize("key", list(PUBLISHED))
def test_published_parameter_counts(key: str) -> None:
    with torch.device("meta"):
        model = build_published(key)
    assert all(p.is_meta for p in model.parameters())
    n = count_parameters(model)
    assert n == OURS[key]
    official = PUBLISHED[key].official_params
    assert abs(n - official) / official < 0.01


def test_published_lookup() -> None:
    assert published("invpt", "nyud").backbone == "vit_large_patch16_384"
    assert published("taskprompter", "pascal", "vitB").kwargs["final_embed_dim"] == 1024
    assert published("mtinet", "pascal").official_tasks["saliency"] == 1
    assert published("invpt", "pascal").official_tasks["saliency"] == 2
    with pytest.raises(MtlkitError, match="no published configuration"):
        published("taskprompter", "nyud", "vitB")


def test_invpt_official_unused_modules() -> None:
    """``official_unused=False`` drops exactly the modules the official decoder builds and never uses."""
    tasks = published("invpt", "nyud").official_tasks
    with torch.device("meta"):
        full = InvPT(TimmViT("vit_large_patch16_384", (448, 576)), tasks)
        lean = InvPT(TimmViT("vit_large_patch16_384", (448, 576)), tasks, official_unused=False)
    unused = (
        count_parameters(full.scale_embed[2])
        + count_parameters(full.redu_chan[0])
        + count_parameters(full.blocks[0].attn.fuse_attn)
        + count_parameters(full.norm_mt)
    )
    assert count_parameters(full) - count_parameters(lean) == unused
    # conv3x3 1024 -> 576, 4 x conv1x1 576 -> 576, conv1x1 4 -> 2 heads, LayerNorm(4 x 144)
    assert unused == (1024 * 9 * 576 + 576) + 4 * (576 * 576 + 576) + (2 * 4 + 2) + 2 * 4 * 144
