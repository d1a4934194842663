"""Task heads: concatenated multi-layer features -> head -> bilinear upsampling to the output size."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mtlkit.errors import UnknownNameError
from mtlkit.models import HEADS, ClassificationHead, ConvHead, LinearHead


def feats(b: int = 2, c: int = 8, n: int = 3, size: int = 4) -> list[torch.Tensor]:
    torch.manual_seed(0)
    return [torch.randn(b, c, size, size) for _ in range(n)]


@pytest.mark.parametrize("kind", ["linear", "conv", "aspp", "hrnet"])
@pytest.mark.parametrize(("out", "size"), [(1, (32, 32)), (40, (32, 48)), (3, (4, 4))])
def test_dense_head_output_shapes(kind: str, out: int, size: tuple[int, int]) -> None:
    head = HEADS.get(kind)([8, 8, 8], out)
    head.eval()
    y = head(feats(), size)
    assert y.shape == (2, out, *size)


def test_registry_names() -> None:
    assert {"linear", "conv", "aspp", "hrnet"} <= set(HEADS.names())
    with pytest.raises(UnknownNameError, match="valid heads: .*conv.*linear"):
        HEADS.get("mlp")


def test_linear_head_is_one_1x1_conv_on_the_concatenation_then_bilinear() -> None:
    head = LinearHead([8, 8, 8], 5)
    f = feats()
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 1 and convs[0].kernel_size == (1, 1) and convs[0].in_channels == 24
    w, b = head.proj.weight[:, :, 0, 0], head.proj.bias
    logits = torch.einsum("oc,bchw->bohw", w, torch.cat(f, 1)) + b.view(1, -1, 1, 1)
    expected = F.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(head(f, (16, 16)), expected, atol=1e-5)


def test_features_of_other_sizes_are_resized_to_the_first() -> None:
    head = LinearHead([8, 8], 2)
    f = [torch.randn(1, 8, 4, 4), torch.ones(1, 8, 2, 2)]
    y = head(f, (4, 4))
    same = head([f[0], torch.ones(1, 8, 4, 4)], (4, 4))  # bilinear upsampling of a constant map is constant
    assert torch.allclose(y, same, atol=1e-6)


def test_conv_head_is_conv_bn_relu_then_1x1() -> None:
    head = ConvHead([8, 8], 3)
    layers = list(head.conv) + [head.proj]
    kinds = [type(m).__name__ for m in layers]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d"]
    assert layers[0].kernel_size == (3, 3) and layers[0].in_channels == 16 and layers[-1].kernel_size == (1, 1)
    head.eval()
    x = torch.cat(feats(1, 8, 2), 1)
    assert torch.allclose(head.predict(x), head.proj(torch.relu(head.conv[1](head.conv[0](x)))), atol=1e-6)


def test_classification_head_pools_the_last_map() -> None:
    head = ClassificationHead([8, 8], 10)
    f = feats(3, 8, 2)
    y = head(f)
    assert y.shape == (3, 10)
    assert torch.allclose(y, head.fc(f[-1].mean((-2, -1))))


def test_aspp_head_is_deeplab_v3_as_vandenhende_et_al() -> None:
    from mtlkit.models import DeepLabHead

    head = DeepLabHead([16], 4)
    branches = head.aspp.convs
    assert len(branches) == 5  # 1x1, three atrous 3x3, image pooling
    assert branches[0][0].kernel_size == (1, 1)
    assert [b[0].dilation for b in branches[1:4]] == [(12, 12), (24, 24), (36, 36)]
    assert [b[0].padding for b in branches[1:4]] == [(12, 12), (24, 24), (36, 36)]
    assert isinstance(branches[4][0], torch.nn.AdaptiveAvgPool2d)
    assert all(b[-2].num_features == 256 for b in branches)
    assert head.aspp.project[0].in_channels == 5 * 256 and head.aspp.project[-1].p == 0.5
    assert head.conv[0].kernel_size == (3, 3) and head.proj.in_channels == 256 and head.proj.out_channels == 4
    head.eval()
    x = torch.randn(2, 16, 5, 5)
    pooled = branches[4](x)
    assert pooled.shape == (2, 256, 5, 5) and torch.allclose(pooled, pooled[..., :1, :1].expand_as(pooled))
    y = head([x], (20, 20))
    assert y.shape == (2, 4, 20, 20)
    # several maps: ASPP on their concatenation at the first map's size (our choice for multi-scale backbones)
    multi = DeepLabHead([8, 8], 4).eval()
    assert multi.aspp.convs[0][0].in_channels == 16
    assert multi([torch.randn(1, 8, 4, 4), torch.randn(1, 8, 2, 2)], (8, 8)).shape == (1, 4, 8, 8)


def test_hrnet_head_upsamples_concatenates_then_1x1_bn_relu_1x1() -> None:
    from mtlkit.models import HRNetHead

    head = HRNetHead([4, 8, 16], 3).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        head.conv[1].running_mean.uniform_(-1, 1)
        head.conv[1].running_var.uniform_(0.5, 2)
    f = [torch.randn(2, 4, 8, 8), torch.randn(2, 8, 4, 4), torch.randn(2, 16, 2, 2)]
    up = [f[0]] + [F.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False) for x in f[1:]]
    conv, bn = head.conv[0], head.conv[1]
    h = torch.cat(up, 1)
    h = F.conv2d(h, conv.weight, conv.bias)
    h = (h - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps)
    h = torch.relu(h * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1))
    logits = F.conv2d(h, head.proj.weight, head.proj.bias)
    expected = F.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False)
    assert conv.in_channels == conv.out_channels == 28 and bn.momentum == 0.1
    assert torch.allclose(head(f, (16, 16)), expected, atol=1e-5)
