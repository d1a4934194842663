"""The feature hook contract: forward_features + optional distill_feature (int, str, list); per-task streams."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mtlkit.distill import FeatureExtractor, select_features, teacher_feature
from mtlkit.errors import MtlkitError

from .tiny import tiny_model

A, B = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)


def test_select_from_lists_named_dicts_and_forked_streams():
    assert select_features([A, B])[0] is B  # default: the last feature map
    assert select_features([A, B], 0)[0] is A
    assert [f is g for f, g in zip(select_features([A, B], [0, -1]), [A, B], strict=True)] == [True, True]
    assert select_features({"layer3": A, "out": B}, "layer3")[0] is A
    forked = {"semseg": [A, B], "depth": [B, A]}
    assert select_features(forked, -1, task="depth")[0] is A
    assert select_features(A)[0] is A


@pytest.mark.parametrize(
    ("feats", "sel", "match"),
    [([A, B], 2, "does not index"), ({"out": B}, "layer9", "named features"), ([A, B], "out", "does not index"),
     ([torch.randn(2, 3, 4)], -1, r"\(B, C, H, W\)"), ([A], 1.5, "int, a str")],
)
def test_bad_selectors_are_user_errors(feats, sel, match):
    with pytest.raises(MtlkitError, match=match):
        select_features(feats, sel)


def test_feature_extractor_uses_the_models_distill_feature():
    torch.manual_seed(0)
    m = tiny_model(("depth",)).eval()
    x = torch.randn(2, 3, 16, 16)
    f1, f2 = m.forward_features(x)
    assert torch.equal(FeatureExtractor(m)(x), f2)  # default: the last feature map
    m.distill_feature = 0
    assert torch.equal(FeatureExtractor(m)(x), f1)
    m.distill_feature = [-1, 0]  # a teacher uses the last entry of a list
    assert torch.equal(FeatureExtractor(m)(x), f1)
    assert torch.equal(FeatureExtractor(m, select=1)(x), f2)  # explicit beats the attribute
    with pytest.raises(MtlkitError, match="forward_features"):
        FeatureExtractor(nn.Linear(2, 2))


def test_teacher_feature_takes_the_last_of_a_list():
    assert teacher_feature([A, B]) is B
    with pytest.raises(MtlkitError, match="teacher"):
        teacher_feature(torch.zeros(3))
