"""Built-in dense tasks: losses on hand-made tensors, primary metrics, directions, the registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mtlkit.errors import UnknownNameError
from mtlkit.metrics import DepthMeter, EdgeMeter, NormalsMeter, SaliencyMeter, SegmentationMeter
from mtlkit.tasks import TASKS, make_task


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_builtin_tasks_declare_channels_primary_and_direction() -> None:
    expected = {
        "semseg": (40, "mIoU", True, SegmentationMeter),
        "parts": (7, "mIoU", True, SegmentationMeter),
        "depth": (1, "rmse", False, DepthMeter),
        "normals": (3, "mean", False, NormalsMeter),
        "edge": (1, "odsF", True, EdgeMeter),
        "saliency": (1, "maxF", True, SaliencyMeter),
    }
    assert set(expected) <= set(TASKS.names())
    for name, (channels, primary, hib, meter) in expected.items():
        t = make_task(name)
        assert (t.name, t.channels, t.primary, t.higher_is_better) == (name, channels, primary, hib)
        m = t.meter()
        assert isinstance(m, meter)
        assert m is not t.meter()  # a fresh meter each time
    assert make_task("semseg", num_classes=21).channels == 21
    assert make_task("semseg", num_classes=21).meter().num_classes == 21
    assert make_task("edge", max_dist=0.0075).meter().max_dist == 0.0075


def test_unknown_task_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="valid tasks: .*depth.*semseg"):
        make_task("semantic")


def test_cross_entropy_by_hand_ignores_255() -> None:
    t = make_task("semseg", num_classes=3)
    pred = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 3.0], [9.0, -9.0, 5.0]]).T.reshape(1, 3, 1, 3)
    target = torch.tensor([[[1, 0, 255]]])
    lse = [math.log(math.exp(1) + math.exp(2) + 1), math.log(2 + math.exp(3))]
    expected = ((lse[0] - 2.0) + (lse[1] - 0.0)) / 2  # mean over the two valid pixels
    assert t.loss(pred, target).item() == pytest.approx(expected)


def test_depth_l1_on_valid_pixels_only() -> None:
    t = make_task("depth")
    pred = torch.tensor([[[[1.5, 9.0], [0.0, 4.0]]]])
    target = torch.tensor([[[[1.0, 0.0], [2.0, 0.0]]]])  # two valid pixels: errors 0.5 and 2
    assert t.loss(pred, target).item() == pytest.approx(1.25)
    # a target without the channel dimension gives the same loss (no silent (B, B, H, W) broadcast)
    pred2 = torch.cat([pred, pred + 1])
    target2 = torch.cat([target, target])
    assert t.loss(pred2, target2[:, 0]).item() == pytest.approx(t.loss(pred2, target2).item())
    assert t.loss(pred2, target2).item() == pytest.approx((1.25 + (1.5 + 1.0) / 2) / 2)


def test_normals_loss_normalises_the_prediction() -> None:
    t = make_task("normals")
    target = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 3)
    scaled = torch.tensor([[5.0, 0.0, 0.0], [0.1, 0.0, 0.0], [1.0, 2.0, 3.0]]).T.reshape(1, 3, 1, 3)
    assert t.loss(scaled, target).item() == pytest.approx(0.0, abs=1e-7)  # third pixel invalid
    orth = torch.tensor([[0.0, 3.0, 0.0], [0.0, 0.0, 0.0], [7.0, 7.0, 7.0]]).T.reshape(1, 3, 1, 3)
    # pixel 1: |(0,1,0) - (1,0,0)| = (1,1,0); pixel 2: zero prediction -> (1,0,0); mean over 6 channel values
    assert t.loss(orth, target).item() == pytest.approx((2 + 1) / 6)


def test_edge_weighting_095_005_by_hand() -> None:
    t = make_task("edge")
    assert t.params["pos_weight"] == 0.95
    logits = torch.tensor([2.0, -1.0, 3.0, 5.0]).view(1, 1, 2, 2)
    target = torch.tensor([1.0, 0.0, 0.0, 255.0]).view(1, 1, 2, 2)
    # BCE(x, 1) = softplus(-x), BCE(x, 0) = softplus(x); summed with weights, / all 4 pixels (MTI-Net)
    expected = (0.95 * softplus(-2.0) + 0.05 * softplus(-1.0) + 0.05 * softplus(3.0)) / 4
    assert t.loss(logits, target).item() == pytest.approx(expected)
    t2 = make_task("edge", pos_weight=0.5)
    assert t2.loss(logits, target).item() == pytest.approx(
        0.5 * (softplus(-2.0) + softplus(-1.0) + softplus(3.0)) / 4
    )


def test_saliency_bce_ignores_255() -> None:
    t = make_task("saliency")
    logits = torch.tensor([0.5, -2.0, 8.0]).view(1, 1, 1, 3)
    target = torch.tensor([1.0, 0.0, 255.0]).view(1, 1, 1, 3)
    assert t.loss(logits, target).item() == pytest.approx((softplus(-0.5) + softplus(-2.0)) / 2)
    assert t.loss(logits.view(1, 3), target.view(1, 3)).item() == pytest.approx(t.loss(logits, target).item())


@pytest.mark.parametrize(
    ("name", "channels", "invalid"),
    [("semseg", 4, 255.0), ("parts", 7, 255.0), ("depth", 1, 0.0), ("normals", 3, 0.0), ("edge", 1, 255.0),
     ("saliency", 1, 255.0)],
)
def test_no_valid_pixel_gives_zero_loss_with_gradient(name: str, channels: int, invalid: float) -> None:
    t = make_task(name, num_classes=channels) if name in ("semseg", "parts") else make_task(name)
    pred = torch.randn(2, channels, 3, 3, requires_grad=True)
    shape = (2, 3, 3) if name in ("semseg", "parts") else (2, channels, 3, 3)
    target = torch.full(shape, invalid)
    if name in ("semseg", "parts"):
        target = target.long()
    loss = t.loss(pred, target)
    assert loss.item() == 0.0
    loss.backward()
    assert pred.grad is not None and torch.equal(pred.grad, torch.zeros_like(pred))


def test_postprocess() -> None:
    logits = torch.randn(2, 5, 3, 3)
    assert torch.equal(make_task("semseg", num_classes=5).postprocess(logits), logits.argmax(1))
    assert torch.allclose(make_task("edge").postprocess(logits[:, :1]), torch.sigmoid(logits[:, :1]))
    n = make_task("normals").postprocess(logits[:, :3])
    assert torch.allclose(n.norm(dim=1), torch.ones(2, 3, 3))
    assert torch.equal(make_task("depth").postprocess(logits[:, :1]), logits[:, :1])
    assert torch.allclose(F.normalize(logits[:, :3], dim=1), n)


def test_every_dense_meter_declares_the_direction_of_its_scores() -> None:
    for name in ("semseg", "parts", "depth", "normals", "edge", "saliency", "depth_zbuffer", "left"):
        t = make_task(name, num_classes=5) if name in ("semseg", "parts") else make_task(name)
        d = t.directions
        assert d[t.primary] is t.higher_is_better
        assert set(d) <= set(t.meter().compute())  # every direction names a reported score
    assert make_task("normals").directions == {"mean": False, "median": False, "rmse": False, "11.25": True,
                                               "22.5": True, "30": True}
    assert make_task("edge", protocol="bsds").directions == {"odsF": True, "precision": True, "recall": True}
    assert "threshold" not in make_task("edge").directions  # a diagnostic, not a score
