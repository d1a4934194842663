"""Parameter counts at the published configurations, built on the meta device (no memory, no weights).

``OFFICIAL``: counted from the official code's module definitions (SimonVandenhende/Multi-Task-Learning-PyTorch
``models/{mtan,mti_net,aspp,seg_hrnet}.py``; prismformore/Multi-Task-Transformer ``InvPT/models/...`` and
``TaskPrompter/models/...``) with the configs' task heads (NYUD: semseg 40, depth 1, normals 3, edge 1;
PASCAL: semseg 21, parts 7, saliency 1 in the survey code / 2 in InvPT and TaskPrompter, normals 3, edge 1).
``OURS``: this package on timm backbones; the table is docs/architectures.md.
"""

from __future__ import annotations

import pytest
import torch

from mtlkit.models.arch import MTAN, InvPT, MTINet, TaskPrompter, count_parameters

from ._support import TimmCNN, TimmViT

NYUD = {"semseg": 40, "depth": 1, "normals": 3, "edge": 1}
PASCAL_1 = {"semseg": 21, "parts": 7, "saliency": 1, "normals": 3, "edge": 1}
PASCAL_2 = dict(PASCAL_1, saliency=2)
NYUD_SIZE, PASCAL_SIZE = (448, 576), (512, 512)
VIT = {"L": "vit_large_patch16_384", "B": "vit_base_patch16_384"}


def _tp(vit: str, size, tasks, **kw):
    return lambda: TaskPrompter(TimmViT(VIT[vit], img_size=size), tasks, img_size=size, **kw)


CONFIGS = {
    # name: (builder, official count, our count)
    "mtan-resnet18-nyud": (lambda: MTAN(TimmCNN("resnet18", output_stride=8), NYUD), 31_630_637, 31_630_637),
    "mtan-resnet18-pascal": (lambda: MTAN(TimmCNN("resnet18", output_stride=8), PASCAL_1), 36_613_425, 36_613_425),
    "mtinet-hrnet18-nyud": (
        lambda: MTINet(TimmCNN("hrnet_w18_small_v2", feature_location=""), NYUD), 17_960_945, 17_960_945
    ),
    "mtinet-hrnet18-pascal": (
        lambda: MTINet(TimmCNN("hrnet_w18_small_v2", feature_location=""), PASCAL_1), 24_494_171, 24_494_171
    ),
    "invpt-vitL-nyud": (lambda: InvPT(TimmViT(VIT["L"], NYUD_SIZE), NYUD), 402_092_888, 402_092_888),
    "invpt-vitB-nyud": (lambda: InvPT(TimmViT(VIT["B"], NYUD_SIZE), NYUD), 160_823_896, 160_823_896),
    "invpt-vitL-pascal": (lambda: InvPT(TimmViT(VIT["L"], PASCAL_SIZE), PASCAL_2), 422_929_810, 422_929_810),
    "invpt-vitB-pascal": (lambda: InvPT(TimmViT(VIT["B"], PASCAL_SIZE), PASCAL_2), 176_347_794, 176_347_794),
    # TaskPrompter's configs: nyud_vitLp16 (768, 768, 16 windows, no CTR), pascal_vitLp16 (300, 350, 1, CTR),
    # pascal_vitBp16 (780, 1024, 16, CTR); ours is larger by timm's class token (unused, as in the official)
    "taskprompter-vitL-nyud": (
        _tp("L", NYUD_SIZE, NYUD, embed_dim=768, final_embed_dim=768, chan_nheads=16),
        513_505_709,
        513_506_733,
    ),
    "taskprompter-vitL-pascal": (
        _tp("L", PASCAL_SIZE, PASCAL_2, embed_dim=300, final_embed_dim=350, chan_nheads=1, use_ctr=True),
        401_104_864,
        401_105_888,
    ),
    "taskprompter-vitB-pascal": (
        _tp("B", PASCAL_SIZE, PASCAL_2, embed_dim=780, final_embed_dim=1024, chan_nheads=16, use_ctr=True),
        418_332_214,
        418_332_982,
    ),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_published_parameter_counts(name: str) -> None:
    build, official, ours = CONFIGS[name]
    with torch.device("meta"):
        model = build()
    n = count_parameters(model)
    assert all(p.is_meta for p in model.parameters())
    assert n == ours
    assert abs(n - official) / official < 0.01


def test_invpt_official_unused_modules() -> None:
    """``official_unused=False`` drops exactly the modules the official decoder builds and never uses."""
    with torch.device("meta"):
        full = InvPT(TimmViT(VIT["L"], NYUD_SIZE), NYUD)
        lean = InvPT(TimmViT(VIT["L"], NYUD_SIZE), NYUD, official_unused=False)
    unused = (
        count_parameters(full.scale_embed[2])
        + count_parameters(full.redu_chan[0])
        + count_parameters(full.blocks[0].attn.fuse_attn)
        + count_parameters(full.norm_mt)
    )
    assert count_parameters(full) - count_parameters(lean) == unused
    # conv3x3 1024 -> 576, 4 x conv1x1 576 -> 576, conv1x1 4 -> 2 heads, LayerNorm(4 x 144)
    assert unused == (1024 * 9 * 576 + 576) + 4 * (576 * 576 + 576) + (2 * 4 + 2) + 2 * 4 * 144
