"""Depth RMSE pooled over every valid pixel of the split (not a mean of per-image RMSEs)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from mtlkit.metrics import DepthMeter

# image 1: four valid pixels, error 1 each; image 2: one valid pixel (error 3), three invalid (gt 0)
GT = torch.tensor([[[[1.0, 1.0], [1.0, 1.0]]], [[[2.0, 0.0], [0.0, 0.0]]]])  # (2, 1, 2, 2)
PRED = torch.tensor([[[[2.0, 2.0], [2.0, 2.0]]], [[[5.0, 9.0], [9.0, 9.0]]]])


def test_pooled_rmse_by_hand() -> None:
    m = DepthMeter()
    m.update(PRED, GT)
    out = m.compute()
    pooled = math.sqrt((4 * 1**2 + 3**2) / 5)  # sqrt(13 / 5) = 1.612
    per_image_mean = (1.0 + 3.0) / 2  # 2.0: what averaging per image would (wrongly) give
    assert out["rmse"] == pytest.approx(pooled)
    assert out["rmse"] != pytest.approx(per_image_mean)
    assert out["l1"] == pytest.approx((4 * 1 + 3) / 5)
    assert out["abs_rel"] == pytest.approx((4 * 1 / 1 + 3 / 2) / 5)
    assert out["log10"] == pytest.approx((4 * math.log10(2) + math.log10(5 / 2)) / 5)


def test_invalid_pixels_never_count() -> None:
    wild = PRED.clone()
    wild[1, 0, 0, 1:] = 1e6  # predictions on gt == 0 pixels are ignored whatever they are
    wild[1, 0, 1, :] = -5.0
    a, b = DepthMeter(), DepthMeter()
    a.update(PRED, GT)
    b.update(wild, GT)
    assert a.compute() == b.compute()


def test_per_image_updates_and_merge_equal_one_update() -> None:
    whole = DepthMeter()
    whole.update(PRED, GT)
    seq = DepthMeter()
    seq.update(PRED[:1], GT[:1])
    seq.update(PRED[1:], GT[1:])
    first, second = DepthMeter(), DepthMeter()
    first.update(PRED[:1], GT[:1])
    second.update(PRED[1:], GT[1:])
    reduced = copy.deepcopy(first)
    first.merge(second)
    for mine, theirs in zip(reduced.state(), second.state(), strict=True):
        mine += theirs
    for m in (seq, first, reduced):
        assert m.compute() == pytest.approx(whole.compute())


def test_prediction_without_channel_dim_and_no_valid_pixel() -> None:
    m = DepthMeter()
    m.update(PRED[:, 0], GT)  # (B, H, W) prediction against (B, 1, H, W) ground truth
    assert m.compute()["rmse"] == pytest.approx(math.sqrt(13 / 5))
    empty = DepthMeter()
    empty.update(PRED, torch.zeros_like(GT))
    assert all(math.isnan(v) for v in empty.compute().values())
