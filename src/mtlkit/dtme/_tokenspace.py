"""Token space of one layer: streamed uncentred covariance, eigendecomposition, range / null split, projections.

DTME-MTL Sec. 4.1 (DESIGN.md §6.1-6.2): C_l = (1/N) Σ x xᵀ over all output tokens x of block l on the
calibration set, eigen-decomposed as a symmetric float64 matrix (λ_1 ≥ … ≥ λ_D, U). The range space is
spanned by the first k eigenvectors, where k is the smallest index with Σ_{i≤k} λ_i ≥ r · Σ_{i>k} λ_i
(the range holds r times the variance left in the null space, i.e. a share r / (1 + r) of the total:
the paper's "proportion of total variance", Eq. 3).
"""

from __future__ import annotations

import torch

from mtlkit.errors import MtlkitError


class TokenCovariance:
    """Streaming uncentred covariance of tokens: float64 running Σ x xᵀ and count, never storing tokens."""

    def __init__(self, dim: int, device: torch.device | str | None = None) -> None:
        self.dim = dim
        self.sum = torch.zeros(dim, dim, dtype=torch.float64, device=device)
        self.count = 0

    @staticmethod
    def batch_sum(tokens: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(Σ x xᵀ in float64, number of tokens) of tokens (..., D), to check before adding them."""
        x = tokens.detach().reshape(-1, tokens.shape[-1]).to(torch.float64)
        return x.T @ x, x.shape[0]

    def add(self, xxt: torch.Tensor, count: int) -> None:
        """Add a :meth:`batch_sum` result."""
        if xxt.shape != self.sum.shape:
            raise MtlkitError(f"token dimension {xxt.shape[-1]} differs from the covariance's {self.dim}")
        self.sum += xxt.to(self.sum.device)
        self.count += count

    def update(self, tokens: torch.Tensor) -> None:
        """Add tokens of shape (..., D) (e.g. a block output (B, N, D))."""
        self.add(*self.batch_sum(tokens))

    def covariance(self) -> torch.Tensor:
        if self.count == 0:
            raise MtlkitError("token covariance has no tokens: the calibration set was empty")
        return self.sum / self.count


def eigh_descending(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending, negatives from round-off clamped to 0) and eigenvectors (columns), float64."""
    c = cov.to(torch.float64)
    c = 0.5 * (c + c.T)
    if not torch.isfinite(c).all():
        raise MtlkitError("token covariance is not finite (NaN/Inf tokens); check the model and the learning rate")
    evals, evecs = torch.linalg.eigh(c)
    return evals.flip(0).clamp_min(0.0), evecs.flip(1)


def split_index(eigenvalues: torch.Tensor, r: float) -> int:
    """Smallest k (1 ≤ k ≤ D) with Σ_{i≤k} λ_i ≥ r · Σ_{i>k} λ_i for descending eigenvalues."""
    if not r > 0:
        raise MtlkitError(f"range/null ratio r must be > 0, got {r}")
    lam = eigenvalues.to(torch.float64).clamp_min(0.0)
    head = torch.cumsum(lam, 0)
    # tail_k = Σ_{i>k} λ_i as a reversed cumulative sum (exact for small tails, unlike total - head)
    tail = torch.cat([torch.cumsum(lam.flip(0), 0).flip(0)[1:], lam.new_zeros(1)])
    ok = torch.nonzero(head >= r * tail)
    return int(ok[0]) + 1  # k = D always qualifies (empty tail)


def variance_captured(eigenvalues: torch.Tensor, k: int) -> float:
    """Share of the total variance in the first k eigen-directions (1.0 for an all-zero spectrum)."""
    lam = eigenvalues.to(torch.float64).clamp_min(0.0)
    total = float(lam.sum())
    return float(lam[:k].sum()) / total if total > 0 else 1.0


def project(grads: torch.Tensor, basis: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates of (..., D) vectors in the range (first k columns of ``basis``) and null space (the rest).

    ``c_R = g U_R``, ``c_N = g U_N``; dot products of these coordinates equal those of the projected vectors
    (U is orthonormal), so conflicts are counted on them directly. Computed in ``basis``'s dtype.
    """
    c = grads.to(basis.dtype) @ basis
    return c[..., :k], c[..., k:]


def range_null_components(grads: torch.Tensor, basis: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The projections themselves: g_R = g U_R U_Rᵀ and g_N = g U_N U_Nᵀ (g_R + g_N = g, g_R ⟂ g_N)."""
    c_r, c_n = project(grads, basis, k)
    return c_r @ basis[:, :k].T, c_n @ basis[:, k:].T
