"""Generic regression meter: MAE, RMSE, R² by hand, against scikit-learn, and its edge cases."""

from __future__ import annotations

import math

import pytest
import torch
from sklearn import metrics as skm

from mtlkit.metrics import GenericRegressionMeter


def test_by_hand() -> None:
    m = GenericRegressionMeter()
    m.update(torch.tensor([[1.0], [2.0]]), torch.tensor([1.0, 3.0]))  # (N, 1) head output, (N,) targets
    m.update(torch.tensor([4.0]), torch.tensor([2.0]))
    out = m.compute()
    # errors 0, -1, 2; targets' mean 2: SS_tot 2, SS_res 5
    assert out["mae"] == pytest.approx(1.0)
    assert out["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert out["r2"] == pytest.approx(1 - 5 / 2)
    assert GenericRegressionMeter.directions == {"mae": False, "rmse": False, "r2": True}


def test_multi_output_matches_sklearn_over_batches() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.randn(90, 3, generator=g) * torch.tensor([1.0, 10.0, 0.1])
    pred = target + torch.randn(90, 3, generator=g) * torch.tensor([0.5, 4.0, 0.2])
    m = GenericRegressionMeter(3)
    for i in range(0, 90, 25):
        m.update(pred[i : i + 25], target[i : i + 25])
    out = m.compute()
    assert out["mae"] == pytest.approx(skm.mean_absolute_error(target, pred))
    assert out["rmse"] == pytest.approx(math.sqrt(skm.mean_squared_error(target, pred)))
    assert out["r2"] == pytest.approx(skm.r2_score(target, pred))  # uniform average over the outputs


def test_r2_keeps_float64_precision_for_large_offsets() -> None:
    g = torch.Generator().manual_seed(1)
    target = 1e4 + torch.randn(4000, dtype=torch.float64, generator=g)  # float32 sums would lose the variance
    pred = target + 0.5 * torch.randn(4000, dtype=torch.float64, generator=g)
    m = GenericRegressionMeter()
    for i in range(0, 4000, 100):
        m.update(pred[i : i + 100], target[i : i + 100])
    assert m.compute()["r2"] == pytest.approx(skm.r2_score(target, pred), abs=1e-7)


def test_constant_targets_follow_sklearn_default() -> None:
    target = torch.full((4,), 2.0)
    perfect, off = GenericRegressionMeter(), GenericRegressionMeter()
    perfect.update(target.clone(), target)
    off.update(torch.tensor([1.0, 2.0, 3.0, 2.0]), target)
    assert perfect.compute()["r2"] == 1.0 == skm.r2_score(target, target)
    assert off.compute()["r2"] == 0.0 == skm.r2_score(target, [1.0, 2.0, 3.0, 2.0])
    assert off.compute()["mae"] == pytest.approx(0.5)


def test_missing_targets_are_skipped_per_element() -> None:
    target = torch.tensor([[1.0, 5.0], [2.0, float("nan")], [4.0, 7.0], [float("nan"), 9.0]])
    pred = torch.tensor([[1.5, 5.0], [2.0, 100.0], [3.0, 8.0], [100.0, 8.0]])
    m = GenericRegressionMeter(2)
    m.update(pred, target)
    out = m.compute()
    errors = torch.tensor([0.5, 0.0, 0.0, 1.0, 1.0, 1.0])  # the six finite targets
    assert out["mae"] == pytest.approx(errors.mean().item())
    assert out["rmse"] == pytest.approx(errors.pow(2).mean().sqrt().item())
    r2 = [skm.r2_score([1.0, 2.0, 4.0], [1.5, 2.0, 3.0]), skm.r2_score([5.0, 7.0, 9.0], [5.0, 8.0, 8.0])]
    assert out["r2"] == pytest.approx(sum(r2) / 2)


def test_too_few_targets() -> None:
    m = GenericRegressionMeter(2)
    m.update(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.5, float("nan")], [2.0, 4.0]]))
    out = m.compute()  # output 1 has one valid target: left out of R²
    assert out["r2"] == pytest.approx(skm.r2_score([1.5, 2.0], [1.0, 3.0]))
    one = GenericRegressionMeter()
    one.update(torch.tensor([1.0]), torch.tensor([2.0]))
    assert math.isnan(one.compute()["r2"]) and one.compute()["mae"] == 1.0
    empty = GenericRegressionMeter()
    empty.update(torch.tensor([1.0]), torch.tensor([float("nan")]))
    assert all(math.isnan(v) for v in empty.compute().values())
