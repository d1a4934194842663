"""Normals: angular error of known vectors, split-level mean / median / thresholds, pooling."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mtlkit.metrics import NormalsMeter, angular_error


def vec(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float64)


def in_plane(deg: float) -> list[float]:
    r = math.radians(deg)
    return [math.cos(r), math.sin(r), 0.0]


def normals_batch(pred_vectors: list[list[float]], gt_vectors: list[list[float]]) -> tuple[torch.Tensor, ...]:
    """(1, 3, 1, N) prediction and ground truth from lists of 3-vectors."""
    p = torch.tensor(pred_vectors, dtype=torch.float32).T.reshape(1, 3, 1, -1)
    g = torch.tensor(gt_vectors, dtype=torch.float32).T.reshape(1, 3, 1, -1)
    return p, g


@pytest.mark.parametrize(
    ("p", "g", "deg"),
    [
        ((1, 0, 0), (0, 1, 0), 90.0),
        ((1, 0, 0), (-1, 0, 0), 180.0),
        ((0, 0, 1), (0, 0, 1), 0.0),
        ((1, 1, 0), (1, 0, 0), 45.0),
        ((2, 0, 0), (0, 0, 5), 90.0),  # not unit: normalised first
        ((1, 0, 0), (-1, 1e-9, 0), 180.0),
    ],
)
def test_known_angles(p: tuple, g: tuple, deg: float) -> None:
    assert angular_error(vec(*p), vec(*g), dim=0).item() == pytest.approx(deg, abs=1e-6)


def test_tiny_and_near_180_angles_are_accurate() -> None:
    # acos(dot) loses everything below ~1e-8 rad; the atan2 form keeps full relative precision
    for eps in (1e-4, 1e-7, 1e-10):
        p, g = vec(1, 0, 0), vec(math.cos(eps), math.sin(eps), 0)
        assert angular_error(p, g, dim=0).item() == pytest.approx(math.degrees(eps), rel=1e-6)
        q = vec(-math.cos(eps), math.sin(eps), 0)
        assert 180 - angular_error(p, q, dim=0).item() == pytest.approx(math.degrees(eps), rel=1e-3)


finite = st.floats(-10, 10, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.tuples(finite, finite, finite), st.tuples(finite, finite, finite), st.floats(0.01, 100))
def test_angle_symmetric_bounded_and_scale_invariant(a: tuple, b: tuple, s: float) -> None:
    p, g = vec(*a), vec(*b)
    assume(p.norm() > 1e-3 and g.norm() > 1e-3)
    e = angular_error(p, g, dim=0).item()
    assert 0.0 <= e <= 180.0
    assert angular_error(g, p, dim=0).item() == pytest.approx(e, abs=1e-9)
    assert angular_error(p * s, g, dim=0).item() == pytest.approx(e, abs=1e-6)
    assert angular_error(p, p, dim=0).item() == pytest.approx(0.0, abs=1e-6)
    cos = float(p @ g / (p.norm() * g.norm()))
    assert e == pytest.approx(math.degrees(math.acos(max(-1.0, min(1.0, cos)))), abs=1e-4)


def test_meter_by_hand_and_invalid_pixels_skipped() -> None:
    # errors 0, 90, 90 on valid pixels; the all-zero ground truth pixel is invalid
    pred, gt = normals_batch([[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0]], [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]])
    m = NormalsMeter()
    m.update(pred, gt)
    out = m.compute()
    assert out["mean"] == pytest.approx(60.0)
    assert out["median"] == pytest.approx(90.0)
    assert out["rmse"] == pytest.approx(math.sqrt(2 * 90**2 / 3))
    for t in ("11.25", "22.5", "30"):
        assert out[t] == pytest.approx(100 / 3)


def test_thresholds_and_median_from_histogram() -> None:
    angles = [5.0, 12.0, 20.0, 25.0, 31.0, 47.123]
    pred, gt = normals_batch([in_plane(a) for a in angles], [in_plane(0)] * len(angles))
    m = NormalsMeter()
    m.update(pred, gt)
    out = m.compute()
    assert out["11.25"] == pytest.approx(100 * 1 / 6)
    assert out["22.5"] == pytest.approx(100 * 3 / 6)
    assert out["30"] == pytest.approx(100 * 4 / 6)
    assert out["mean"] == pytest.approx(sum(angles) / 6, abs=1e-4)
    # even count: mean of the two middle errors, as np.median; histogram resolution 0.01 deg
    assert out["median"] == pytest.approx((20 + 25) / 2, abs=0.01)
    m.update(*normals_batch([in_plane(13.337)], [in_plane(0)]))
    assert m.compute()["median"] == pytest.approx(20.0, abs=0.01)


def test_median_of_two_far_apart_errors() -> None:
    m = NormalsMeter()
    m.update(*normals_batch([[1, 0, 0], [1, 0, 0]], [[1, 0, 0], [0, 1, 0]]))
    assert m.compute()["median"] == pytest.approx(45.0)


def test_split_updates_merge_and_state_reduce_equal_one_update() -> None:
    g = torch.Generator().manual_seed(0)
    pred, gt = torch.randn(4, 3, 5, 5, generator=g), torch.nn.functional.normalize(torch.randn(4, 3, 5, 5, generator=g))
    gt[1, :, :2] = 0  # some invalid pixels
    whole = NormalsMeter()
    whole.update(pred, gt)
    a, b = NormalsMeter(), NormalsMeter()
    a.update(pred[:3], gt[:3])
    b.update(pred[3:], gt[3:])
    reduced = copy.deepcopy(a)
    a.merge(b)
    for mine, theirs in zip(reduced.state(), b.state(), strict=True):
        mine += theirs
    for m in (a, reduced):
        assert m.compute() == pytest.approx(whole.compute())
    empty = NormalsMeter()
    empty.update(pred, torch.zeros_like(gt))
    assert all(math.isnan(v) for v in empty.compute().values())
