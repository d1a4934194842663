"""The URL distance against hand-computed values (reduction: sum over channels, mean over batch and positions)."""

from __future__ import annotations

import pytest
import torch

from mtlkit.distill import url_distance
from mtlkit.errors import MtlkitError


def _map(vectors: list[list[float]], h: int = 1) -> torch.Tensor:
    """(1, C, h, len(vectors)): one channel vector per column."""
    return torch.tensor(vectors).T[None, :, None, :].expand(1, -1, h, -1).contiguous()


def test_same_direction_is_zero_whatever_the_scale():
    s = torch.randn(2, 5, 3, 4)
    assert url_distance(s, s).item() == pytest.approx(0.0, abs=1e-6)
    assert url_distance(s, 7.5 * s).item() == pytest.approx(0.0, abs=1e-6)


def test_known_offset_hand_computed():
    # student (3, 4) -> (0.6, 0.8), teacher (1, 0): (0.6-1)^2 + 0.8^2 = 0.16 + 0.64 = 0.8 (summed over channels)
    s = _map([[3.0, 4.0], [0.0, 2.0]])
    t = _map([[1.0, 0.0], [0.0, 5.0]])  # second position: same direction -> 0
    assert url_distance(s, t).item() == pytest.approx((0.8 + 0.0) / 2, abs=1e-6)  # mean over positions
    # opposite and orthogonal directions give 4 and 2; with a batch of two the mean is over all B*H*W
    s2 = torch.cat([_map([[1.0, 0.0]]), _map([[0.0, 1.0]])])
    t2 = torch.cat([_map([[-2.0, 0.0]]), _map([[3.0, 0.0]])])
    assert url_distance(s2, t2).item() == pytest.approx((4.0 + 2.0) / 2, abs=1e-6)


def test_vectors_and_teacher_gets_no_gradient():
    s = torch.tensor([[3.0, 4.0]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0]], requires_grad=True)
    d = url_distance(s, t)
    assert d.item() == pytest.approx(0.8, abs=1e-6)
    d.backward()
    assert s.grad is not None and t.grad is None


def test_shape_mismatch_is_a_user_error():
    with pytest.raises(MtlkitError, match="same shape"):
        url_distance(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 8, 8))
