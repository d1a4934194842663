"""The exact min-norm point of the convex hull of the task gradients, from their Gramian (MGDA's weights).

Sener & Koltun's ``MinNormSolver`` (github.com/isl-org/MultiObjectiveOptimization,
``multi_task/min_norm_solvers.py``) starts from the best pair and runs projected gradient descent on the
simplex until the step is below 1e-5; TorchJD's ``MGDA`` runs Frank-Wolfe (their Algorithm 2) to a
tolerance of 1e-3. Both stop short of the min-norm point (about 1e-5 and 1e-3 of it). This is Wolfe's
min-norm-point algorithm (Wolfe 1976), which ends at the exact point (an active set whose affine minimiser
lies in the simplex and that no vertex improves) after finitely many steps, up to float64 round-off.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _affine_minimiser(g: Tensor) -> Tensor:
    """Weights v (summing to 1) of the min-norm point of the affine hull of the points with Gramian ``g``:
    the KKT system [[G, 1], [1ᵀ, 0]] [v; μ] = [0; 1]."""
    k = g.shape[0]
    a = torch.zeros(k + 1, k + 1, dtype=g.dtype)
    a[:k, :k] = g
    a[:k, k] = 1.0
    a[k, :k] = 1.0
    b = torch.zeros(k + 1, dtype=g.dtype)
    b[k] = 1.0
    try:
        sol = torch.linalg.solve(a, b)
        if bool(torch.isfinite(sol).all()):
            return sol[:k]
    except RuntimeError:  # singular: affinely dependent points
        pass
    return torch.linalg.lstsq(a, b.unsqueeze(1), driver="gelsd").solution[:k, 0]


def min_norm_weights(gramian: Tensor, tol: float = 1e-12, max_iters: int | None = None) -> Tensor:
    """Weights w on the simplex minimising wᵀ G w (G = J Jᵀ), exact up to round-off (Wolfe's algorithm).

    ``tol`` is relative to the largest squared gradient norm: the point x = Jᵀw is optimal when no task
    gradient g_i has g_i·x < ||x||² - tol · max_i ||g_i||².
    """
    dtype, device = gramian.dtype, gramian.device
    g = gramian.detach().to(torch.float64).cpu()
    g = 0.5 * (g + g.T)
    t = g.shape[0]
    diag = g.diagonal()
    scale = float(diag.max()) if t else 0.0
    w = torch.zeros(t, dtype=torch.float64)
    if t == 0:
        return w.to(device=device, dtype=dtype)
    if not scale > 0.0:  # all gradients are zero: every point is the min-norm point
        return torch.full((t,), 1.0 / t, dtype=dtype, device=device)
    j = int(torch.argmin(diag))
    w[j] = 1.0
    active = [j]
    eps = 1e-14
    for _ in range(max_iters or 50 * t + 50):
        gw = g @ w
        xx = float(w @ gw)
        k = int(torch.argmin(gw))
        if xx - float(gw[k]) <= tol * scale or k in active:
            break
        active.append(k)
        while True:  # minor cycle: move to the affine minimiser of the active set, dropping vertices
            idx = torch.tensor(active)
            v = _affine_minimiser(g[idx][:, idx])
            if bool((v > eps).all()):
                w.zero_()
                w[idx] = v
                break
            cur = w[idx]
            neg = v <= eps
            theta = float(torch.min(cur[neg] / (cur[neg] - v[neg])))
            new = cur + theta * (v - cur)
            w.zero_()
            keep = [a for a, x in zip(active, new.tolist(), strict=True) if x > eps]
            if not keep:  # round-off: fall back to the best vertex of the set
                keep = [active[int(torch.argmin(g[idx, idx].diagonal()))]]
                w[keep[0]] = 1.0
            else:
                for a, x in zip(active, new.tolist(), strict=True):
                    if x > eps:
                        w[a] = x
            active = keep
            if len(active) == 1:
                w.zero_()
                w[active[0]] = 1.0
                break
    w = w.clamp_min(0.0)
    w = w / w.sum()
    return w.to(device=device, dtype=dtype)
