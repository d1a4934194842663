"""URLAdaptor: bias-free 1x1 convolutions, Xavier-normal init (nyu_url.py lines 50-69), own generator."""

from __future__ import annotations

import math

import pytest
import torch

from mtlkit.distill import URLAdaptor
from mtlkit.errors import MtlkitError


def test_xavier_normal_init_and_no_bias():
    a = URLAdaptor([256, 64], 128, generator=torch.Generator().manual_seed(0))
    assert [c.bias for c in a.convs] == [None, None]
    for conv, fan_in in zip(a.convs, (256, 64), strict=True):
        w = conv.weight
        assert w.shape == (128, fan_in, 1, 1)
        expected = math.sqrt(2.0 / (fan_in + 128))
        assert w.std().item() == pytest.approx(expected, rel=0.05)
        assert abs(w.mean().item()) < 0.1 * expected


def test_own_generator_is_reproducible_and_leaves_global_rng_alone():
    before = torch.get_rng_state()
    a = URLAdaptor(8, 4, generator=torch.Generator().manual_seed(3))
    b = URLAdaptor(8, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(a.convs[0].weight, b.convs[0].weight)


def test_maps_vectors_and_identity():
    a = URLAdaptor([4, 4], 4).set_identity()
    x, v = torch.randn(2, 4, 3, 3), torch.randn(2, 4)
    y = a([x, v])
    assert torch.allclose(y[0], x) and torch.allclose(y[1], v)
    with pytest.raises(MtlkitError, match="maps"):
        a([torch.randn(2, 4, 3), v])
    with pytest.raises(MtlkitError, match="equal channels"):
        URLAdaptor(4, 2).set_identity()
