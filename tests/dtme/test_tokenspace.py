import pytest
import torch

from mtlkit.dtme import (
    TokenCovariance,
    eigh_descending,
    project,
    range_null_components,
    split_index,
    variance_captured,
)
from mtlkit.errors import MtlkitError

# total 1000; head sums 500, 800, 900, 950, 980, 990, 996, 999, 1000; tails 500, 200, 100, 50, 20, 10, 4, 1, 0
SPECTRUM = torch.tensor([500.0, 300, 100, 50, 30, 10, 6, 3, 1], dtype=torch.float64)


@pytest.mark.parametrize(
    ("r", "k"),
    [
        (1, 1),  # 500 >= 1 * 500 (equality counts)
        (10, 4),  # 800 < 2000, 900 < 1000, 950 >= 500
        (100, 7),  # 980 < 2000, 990 < 1000, 996 >= 400
        (1000, 9),  # 999 < 1000: only the full space qualifies
    ],
)
def test_split_index_on_constructed_spectrum(r, k):
    assert split_index(SPECTRUM, r) == k


def test_split_index_is_the_variance_share_criterion():
    # k is the smallest index holding a share r / (1 + r) of the variance
    for r in (1, 10, 100):
        k = split_index(SPECTRUM, r)
        assert variance_captured(SPECTRUM, k) >= r / (1 + r)
        assert k == 1 or variance_captured(SPECTRUM, k - 1) < r / (1 + r)


def test_split_index_rejects_bad_ratio():
    with pytest.raises(MtlkitError, match="ratio r"):
        split_index(SPECTRUM, 0)


def test_eigh_descending_recovers_a_constructed_covariance():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(9, 9, dtype=torch.float64))
    cov = q @ torch.diag(SPECTRUM) @ q.T
    evals, evecs = eigh_descending(cov)
    torch.testing.assert_close(evals, SPECTRUM)
    torch.testing.assert_close(cov @ evecs, evecs * evals)


def test_projections_sum_to_the_gradient_and_are_orthogonal():
    torch.manual_seed(1)
    basis, _ = torch.linalg.qr(torch.randn(16, 16, dtype=torch.float64))
    g = torch.randn(50, 16, dtype=torch.float64)
    g_r, g_n = range_null_components(g, basis, 5)
    torch.testing.assert_close(g_r + g_n, g)
    assert (g_r * g_n).sum(-1).abs().max() < 1e-12
    # dot products of the coordinates equal those of the projections
    c_r, c_n = project(g, basis, 5)
    assert c_r.shape == (50, 5) and c_n.shape == (50, 11)
    torch.testing.assert_close(c_r @ c_r.T, g_r @ g_r.T)
    torch.testing.assert_close(c_n[:3] @ c_n[3:6].T, g_n[:3] @ g_n[3:6].T)


def test_streamed_covariance_equals_covariance_of_all_tokens():
    torch.manual_seed(2)
    parts = [torch.randn(b, 7, 8) for b in (1, 4, 3)]
    cov = TokenCovariance(8)
    for p in parts:
        cov.update(p)
    x = torch.cat([p.reshape(-1, 8) for p in parts]).double()
    assert cov.count == 8 * 7
    torch.testing.assert_close(cov.covariance(), x.T @ x / x.shape[0])


def test_empty_or_non_finite_covariance_is_an_error():
    with pytest.raises(MtlkitError, match="no tokens"):
        TokenCovariance(4).covariance()
    with pytest.raises(MtlkitError, match="not finite"):
        eigh_descending(torch.full((3, 3), float("nan")))
