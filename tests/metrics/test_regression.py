"""Pooled L1 / RMSE regression meter and top-1 accuracy."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mtlkit.metrics import AccuracyMeter, RegressionMeter


def test_pooled_l1_rmse_by_hand_with_ignored_and_nonfinite_targets() -> None:
    target = torch.tensor([[1.0, 2.0, -1.0], [4.0, float("nan"), -1.0]])
    pred = torch.tensor([[2.0, 0.0, 7.0], [1.0, 3.0, 9.0]])
    m = RegressionMeter(ignore_value=-1.0)
    m.update(pred, target)
    # valid: errors 1, 2, 3
    out = m.compute()
    assert out["l1"] == pytest.approx(2.0)
    assert out["rmse"] == pytest.approx(math.sqrt((1 + 4 + 9) / 3))
    # without ignore_value, -1 targets count (errors 8 and 10), NaN still never does
    m = RegressionMeter()
    m.update(pred, target)
    assert m.compute()["l1"] == pytest.approx((1 + 2 + 8 + 3 + 10) / 5)
    assert all(math.isnan(v) for v in RegressionMeter().compute().values())


def test_pooled_rmse_differs_from_mean_of_batches() -> None:
    m = RegressionMeter()
    m.update(torch.ones(4), torch.zeros(4))  # rmse 1 over 4 elements
    m.update(torch.full((1,), 3.0), torch.zeros(1))  # rmse 3 over 1 element
    assert m.compute()["rmse"] == pytest.approx(math.sqrt(13 / 5))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.floats(-5, 5), st.floats(-5, 5)), min_size=1, max_size=30), st.integers(0, 30))
def test_split_and_merge_equal_one_update(pairs: list[tuple[float, float]], cut: int) -> None:
    pred = torch.tensor([p for p, _ in pairs])
    target = torch.tensor([t for _, t in pairs])
    whole = RegressionMeter()
    whole.update(pred, target)
    a, b = RegressionMeter(), RegressionMeter()
    a.update(pred[:cut], target[:cut])
    b.update(pred[cut:], target[cut:])
    reduced = copy.deepcopy(a)
    a.merge(b)
    for mine, theirs in zip(reduced.state(), b.state(), strict=True):
        mine += theirs
    assert a.compute() == pytest.approx(whole.compute())
    assert reduced.compute() == pytest.approx(whole.compute())


def test_accuracy() -> None:
    m = AccuracyMeter()
    m.update(torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), torch.tensor([1, 1, 1]))
    m.update(torch.tensor([[0.0, 1.0]]), torch.tensor([1]))
    assert m.compute()["accuracy"] == pytest.approx(75.0)
    assert math.isnan(AccuracyMeter().compute()["accuracy"])
