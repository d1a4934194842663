"""Tolerance-matched edge F-measure: one-pixel shifts inside / outside the tolerance, ODS over the split."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from mtlkit.metrics import EdgeMeter, tolerance_counts

H = W = 20
DIAG = math.hypot(H, W)
INSIDE = 1.5 / DIAG  # tolerance of 1.5 pixels
OUTSIDE = 0.5 / DIAG  # tolerance of half a pixel: only exact hits count
THRESHOLDS = np.array([0.5])


def line(col: int, rows: slice = slice(None)) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[rows, col] = True
    return m


def f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def test_one_pixel_shift_inside_and_outside_tolerance() -> None:
    gt = line(5)
    pred = line(6).astype(float)
    inside = tolerance_counts(pred, gt, THRESHOLDS, INSIDE)
    assert inside.tolist() == [[20, 20, 20, 20]]  # every prediction and every edge matched
    outside = tolerance_counts(pred, gt, THRESHOLDS, OUTSIDE)
    assert outside.tolist() == [[0, 20, 0, 20]]
    exact = tolerance_counts(line(5).astype(float), gt, THRESHOLDS, OUTSIDE)
    assert exact.tolist() == [[20, 20, 20, 20]]


def test_partial_match_by_hand() -> None:
    # gt: column 5, all 20 rows. pred: column 6 rows 0-9 (1 px away) and column 15 rows 0-9 (far).
    gt = line(5)
    pred = (line(6, slice(0, 10)) | line(15, slice(0, 10))).astype(float)
    c = tolerance_counts(pred, gt, THRESHOLDS, INSIDE)[0]
    # matched predictions: the 10 near ones. Recalled gt: rows 0-9 (distance 1) and row 10, whose
    # nearest prediction (9, 6) is sqrt(2) = 1.41 <= 1.5 away; row 11 is sqrt(5) away.
    assert c.tolist() == [10, 20, 11, 20]
    m = EdgeMeter(max_dist=INSIDE, num_thresholds=1)
    m.update(torch.logit(torch.tensor(pred * 0.98 + 0.01)).view(1, 1, H, W), torch.tensor(gt, dtype=torch.float32))
    assert m.compute()["odsF"] == pytest.approx(100 * f1(10 / 20, 11 / 20))


def test_ods_picks_the_best_threshold_and_ignores_255() -> None:
    # a true (shifted) edge with probability 0.8 and a spurious one with 0.27
    prob = np.full((H, W), 0.01)
    prob[:, 6] = 0.8
    prob[:, 15] = 0.27
    gt = torch.tensor(line(5), dtype=torch.float32)
    m = EdgeMeter(max_dist=INSIDE)
    m.update(torch.logit(torch.tensor(prob)).view(1, 1, H, W), gt.view(1, 1, H, W))
    out = m.compute()
    assert out["odsF"] == pytest.approx(100.0)  # t in (0.27, 0.8]: P = R = 1; at t <= 0.27, P = 1/2
    assert out["threshold"] == pytest.approx(0.3)
    # marking the spurious column as ignored makes every threshold up to 0.8 perfect
    gt_ignored = gt.clone()
    gt_ignored[:, 15] = 255
    m = EdgeMeter(max_dist=INSIDE)
    m.update(torch.logit(torch.tensor(prob)).view(1, H, W), gt_ignored.view(1, H, W))
    assert m.compute()["threshold"] == pytest.approx(0.05)


def test_counts_are_summed_over_the_split() -> None:
    # image A: perfect (20 of 20); image B: two predicted edges, one spurious, one missed gt edge
    gt_a, pred_a = line(5), line(5).astype(float)
    gt_b = line(3) | line(10)
    pred_b = (line(3) | line(16)).astype(float)
    gts = torch.tensor(np.stack([gt_a, gt_b]), dtype=torch.float32).unsqueeze(1)
    logit = torch.logit(torch.tensor(np.stack([pred_a, pred_b]) * 0.98 + 0.01)).unsqueeze(1)
    whole = EdgeMeter(max_dist=INSIDE)
    whole.update(logit, gts)
    # pooled: P = (20 + 20) / (20 + 40), R = (20 + 20) / (20 + 40)  -> F = 2/3 (per-image mean would be 0.75)
    assert whole.compute()["odsF"] == pytest.approx(100 * 2 / 3)
    a, b = EdgeMeter(max_dist=INSIDE), EdgeMeter(max_dist=INSIDE)
    a.update(logit[:1], gts[:1])
    b.update(logit[1:], gts[1:])
    reduced = copy.deepcopy(a)
    a.merge(b)
    for mine, theirs in zip(reduced.state(), b.state(), strict=True):
        mine += theirs
    assert a.compute() == pytest.approx(whole.compute())
    assert reduced.compute() == pytest.approx(whole.compute())


def test_no_edges_anywhere_is_zero_not_nan() -> None:
    m = EdgeMeter()
    m.update(torch.full((1, 1, 8, 8), -5.0), torch.zeros(1, 1, 8, 8))
    assert m.compute()["odsF"] == 0.0
