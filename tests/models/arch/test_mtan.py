"""MTAN: the captured last-block inputs, the attention chain, deep copies, backbones without stages."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtlkit.errors import MtlkitError
from mtlkit.models.arch import MTAN

from ._support import TimmCNN


@pytest.fixture(scope="module")
def model() -> MTAN:
    torch.manual_seed(0)
    return MTAN(TimmCNN("resnet18", output_stride=8), {"semseg": 5, "depth": 1}, head_channels=8).eval()


def test_captures_the_input_of_each_stage_last_block(model: MTAN) -> None:
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        feats = model.forward_features(x)
        maps = model.backbone(x)[1:]
    ub, ut = feats[0::2], feats[1::2]
    stages = [model.backbone.model[f"layer{k}"] for k in range(1, 5)]
    for k, stage in enumerate(stages):
        torch.testing.assert_close(ut[k], maps[k])
        torch.testing.assert_close(stage[-1](ub[k]), ut[k])  # last block(u_b) == stage output
    # dilated ResNet-18: 1/4 then 1/8 at the last three stages
    assert [u.shape[-1] for u in ut] == [12, 6, 6, 6]


def test_attention_chain_matches_the_official_order(model: MTAN) -> None:
    """a_k = att_k(cat(u_b, a_{k-1})) * u_t; refine + 2x2 max-pool after stage 1 only (dilated ResNet)."""
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        out = model(x)
        feats = model.forward_features(x)
        ub, ut = feats[0::2], feats[1::2]
        a = model.attention[0]["depth"](ub[0]) * ut[0]
        a = F.max_pool2d(model.refine[0](a), 2, 2)
        for k in (1, 2, 3):
            a = model.attention[k]["depth"](torch.cat([ub[k], a], 1)) * ut[k]
            if k < 3:
                a = model.refine[k](a)
        ref = F.interpolate(model.heads["depth"](a), size=(48, 48), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out["depth"], ref)


def test_widths_follow_the_official_resnet18_config(model: MTAN) -> None:
    ch = [64, 128, 256, 512]
    for k in range(4):
        first, last = model.attention[k]["semseg"][0], model.attention[k]["semseg"][3]
        assert first.in_channels == (ch[0] if k == 0 else 2 * ch[k]) and first.out_channels == ch[k] // 4
        assert last.out_channels == ch[k]
    assert [r[0].conv3.out_channels for r in model.refine] == ch[1:]


def test_deepcopy_hooks_into_the_copy(model: MTAN) -> None:
    twin = copy.deepcopy(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(twin(x)["semseg"], model(x)["semseg"])
        feats = twin.forward_features(x)
    assert len(feats) == 8 and all(f is not None for f in feats)


def test_backbone_without_stages_is_refused() -> None:
    class Flat(nn.Module):
        out_channels = [8, 8, 8, 8]

        def forward(self, x):
            return [x] * 4

    with pytest.raises(MtlkitError, match="stages"):
        MTAN(Flat(), {"depth": 1})
    with pytest.raises(MtlkitError, match="needs 6 stages"):
        MTAN(TimmCNN("resnet18"), {"depth": 1}, num_stages=6)
