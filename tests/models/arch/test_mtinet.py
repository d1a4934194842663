"""MTI-Net: deep supervision as the official loss, self-distillation, FPM and distillation wiring."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mtlkit.errors import MtlkitError
from mtlkit.models.arch import MTINet

from ._support import TimmCNN, make_batch, make_tasks

CHANNELS = {"semseg": 5, "depth": 1, "edge": 1}


@pytest.fixture(scope="module")
def model() -> MTINet:
    torch.manual_seed(0)
    return MTINet(TimmCNN("hrnet_w18_small_v2", feature_location=""), CHANNELS)


def test_task_losses_are_the_official_mtinet_loss(model: MTINet) -> None:
    """L_t = L(out_t) + Σ_s L(initial prediction at s, bilinearly upsampled) as ``MTINetLoss``."""
    raw: dict[tuple[int, str], torch.Tensor] = {}
    hooks = [
        init.decoders[t].register_forward_hook(lambda m, i, o, s=s, t=t: raw.__setitem__((s, t), o))
        for s, init in enumerate(model.initial)
        for t in CHANNELS
    ]
    batch = make_batch(CHANNELS, size=32)
    tasks = make_tasks(CHANNELS)
    out = model(batch["image"])
    for h in hooks:
        h.remove()
    losses = model.task_losses(out, batch, tasks)
    assert sorted(model.aux["depth"]) == ["scale_0", "scale_1", "scale_2", "scale_3"]
    for t, task in tasks.items():
        expected = task.loss(out[t], batch[t])
        for s in range(4):
            up = F.interpolate(raw[(s, t)], size=(32, 32), mode="bilinear", align_corners=False)
            expected = expected + task.loss(up, batch[t])
        torch.testing.assert_close(losses[t], expected)
    # scales: HRNet branches at 1/4 .. 1/32 with 18 .. 144 channels
    assert [raw[(s, "depth")].shape[-1] for s in range(4)] == [8, 4, 2, 1]
    assert model.channels == [18, 36, 72, 144]


def test_distillation_sources() -> None:
    multi = MTINet(TimmCNN("ghostnet_050"), CHANNELS)
    assert not multi.self_distillation
    assert sorted(multi.distillation[0].self_attention["depth"]) == ["edge", "semseg"]
    single = MTINet.single_task(TimmCNN("ghostnet_050"), "depth", 1)
    assert single.self_distillation
    assert list(single.distillation[2].self_attention["depth"]) == ["depth"]
    forced = MTINet(TimmCNN("ghostnet_050"), CHANNELS, self_distillation=True)
    assert sorted(forced.distillation[0].self_attention["depth"]) == ["depth", "edge", "semseg"]


def test_single_task_twin_self_distils_with_fpm_and_deep_supervision() -> None:
    torch.manual_seed(0)
    twin = MTINet.single_task(TimmCNN("ghostnet_050"), "depth", 1)
    batch = make_batch({"depth": 1}, size=32)
    out = twin(batch["image"])
    loss = twin.task_losses(out, batch, make_tasks({"depth": 1}))["depth"]
    loss.backward()
    sa = twin.distillation[0].self_attention["depth"]["depth"]
    assert sa.conv.weight.grad is not None and sa.conv.weight.grad.abs().sum() > 0
    assert all(f.se["depth"].squeeze[0].weight.grad is not None for f in twin.fpm[1:])
    assert len(twin.aux["depth"]) == 4


def test_fpm_attention_is_a_softmax_over_tasks(model: MTINet) -> None:
    fpm = model.fpm[3]
    feats = {t: torch.randn(2, 144, 2, 2) for t in CHANNELS}
    with torch.no_grad():
        concat = torch.cat([feats[t] for t in CHANNELS], 1)
        logits = fpm.non_linear(concat).view(2, 144, 3, 2, 2)
        mask = torch.softmax(logits, dim=2)
        torch.testing.assert_close(mask.sum(2), torch.ones(2, 144, 2, 2))
        shared = fpm.dimensionality_reduction((mask * concat.view(2, 144, 3, 2, 2)).view(2, 432, 2, 2))
        out = fpm(feats)
    for t in CHANNELS:
        torch.testing.assert_close(out[t], fpm.se[t](shared) + feats[t])


def test_needs_two_scales() -> None:
    with pytest.raises(MtlkitError, match="at least 2"):
        MTINet(TimmCNN("ghostnet_050"), CHANNELS, num_scales=1)
