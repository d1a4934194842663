"""Gradient aggregators: each method's defining property on small hand-made Jacobians.

The toy problem L_t = a_t · θ has the Jacobian rows a_t exactly, so ``θ.grad`` after ``backward`` is the
aggregated update d.
"""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import torch

from mtlkit import balancing
from mtlkit.errors import MtlkitError

from .balancing_helpers import linear_losses

J3 = torch.tensor([[1.0, 0.5, -0.2, 0.0], [-0.8, 1.0, 0.3, 0.1], [0.2, -0.6, 1.5, -0.4]], dtype=torch.float64)
SOLVER_METHODS = {"cagrad", "nash_mtl"}


def aggregate(name, rows, **options):
    theta, losses = linear_losses(rows)
    bal = balancing.get(name, tasks=list(losses), **options)
    info = bal.backward(losses, shared=[theta])
    return theta.grad.detach().clone(), info


def weights_of(info):
    return torch.tensor(list(info["weights"].values()), dtype=torch.float64)


def test_pcgrad_projection_removes_negative_dot_products():
    g1, g2 = torch.tensor([1.0, 1.0], dtype=torch.float64), torch.tensor([-1.0, 0.0], dtype=torch.float64)
    d, _ = aggregate("pcgrad", torch.stack([g1, g2]))
    p1 = g1 - (g1 @ g2) / (g2 @ g2) * g2  # projected onto the normal plane of g2: (0, 1)
    p2 = g2 - (g2 @ g1) / (g1 @ g1) * g1  # (-0.5, 0.5)
    torch.testing.assert_close(d, p1 + p2)
    assert p1 @ g2 == pytest.approx(0.0) and p2 @ g1 == pytest.approx(0.0)
    assert d @ g1 >= 0 and d @ g2 >= 0
    d, _ = aggregate("pcgrad", torch.tensor([[1.0, 0.0], [1.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(d, torch.tensor([2.0, 1.0], dtype=torch.float64))  # no conflict: plain sum


def test_mgda_weights_match_brute_force_min_norm_on_the_simplex():
    d, info = aggregate("mgda", J3, epsilon=1e-6, max_iters=5000)
    w = weights_of(info)
    assert w.sum() == pytest.approx(1.0, abs=1e-6) and (w >= -1e-9).all()
    best = math.inf
    steps = 200
    for i in range(steps + 1):
        for j in range(steps + 1 - i):
            lam = torch.tensor([i, j, steps - i - j], dtype=torch.float64) / steps
            best = min(best, float((lam @ J3).norm()))
    assert float(d.norm()) <= best + 1e-3
    # the min-norm point is not improved by moving toward any vertex (optimality on the simplex)
    for k in range(3):
        assert float(J3[k] @ d) >= float(d @ d) - 1e-3


def test_imtl_g_update_has_equal_projections_on_unit_gradients():
    d, info = aggregate("imtl", J3, loss_scale=False)
    proj = (J3 / J3.norm(dim=1, keepdim=True)) @ d
    torch.testing.assert_close(proj, proj.mean().expand(3), rtol=1e-6, atol=1e-9)
    assert weights_of(info).sum() == pytest.approx(1.0)


def test_imtl_loss_scales_get_their_imtl_l_gradient():
    theta = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    values = [2.0, 0.5, 1.0]
    losses = {f"t{i}": J3[i] @ theta + values[i] for i in range(3)}
    bal = balancing.get("imtl", tasks=list(losses))
    with torch.no_grad():
        bal.scales.copy_(torch.tensor([0.1, -0.2, 0.0]))
    bal.backward(losses, shared=[theta])
    s = torch.tensor([0.1, -0.2, 0.0])
    torch.testing.assert_close(bal.scales.grad, torch.exp(s) * torch.tensor(values) - 1)  # ∂(e^s L - s)/∂s


def test_cagrad_solves_its_problem():
    pytest.importorskip("cvxpy")
    c = 0.4
    d, info = aggregate("cagrad", J3, c=c, rescale=0, scale="mean")
    g0 = J3.mean(0)
    torch.testing.assert_close((d - g0).norm(), c * g0.norm(), rtol=1e-4, atol=1e-6)  # on the ball's boundary
    w_star = (d - g0) / ((d - g0).norm())  # direction of g_w

    def objective(w):
        gw = w @ J3
        return float(gw @ g0 + c * g0.norm() * gw.norm())

    # recover the simplex weights of g_w from d (least squares), then compare with random simplex points
    w_opt, *_ = np.linalg.lstsq(J3.T.numpy(), w_star.numpy(), rcond=None)
    w_opt = torch.tensor(w_opt / w_opt.sum())
    rng = np.random.default_rng(0)
    for _ in range(500):
        w = torch.tensor(rng.dirichlet(np.ones(3)))
        assert objective(w_opt) <= objective(w) + 1e-5
    d1, _ = aggregate("cagrad", J3, c=c, rescale=1, scale="mean")
    torch.testing.assert_close(d1, d / (1 + c**2))
    d3, _ = aggregate("cagrad", J3, c=c)  # default: rescale 1 and the official code's x T (the sum loss)
    torch.testing.assert_close(d3, 3 * d / (1 + c**2))


def test_nash_mtl_satisfies_the_bargaining_condition():
    pytest.importorskip("cvxpy")
    d, info = aggregate("nash_mtl", J3, max_norm=0.0, optim_niter=200)
    a = weights_of(info)
    g = J3 @ J3.T  # the solver normalises G but its constraint α_t (Gα)_t >= 1 keeps the original scale
    residual = (g @ a - 1 / a).norm() / (1 / a).norm()
    assert residual < 1e-4
    assert (a > 0).all()


def test_fairgrad_satisfies_its_fixed_point():
    alpha = 2.0
    _, info = aggregate("fairgrad", J3, alpha=alpha, scale="mean")
    w = weights_of(info)
    torch.testing.assert_close(J3 @ J3.T @ w, w.pow(-1 / alpha), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
def test_dual_cone_methods_do_not_conflict_with_any_task(name):
    d, _ = aggregate(name, J3)
    assert (J3 @ d >= -1e-6).all()


def test_aligned_mtl_aligns_the_principal_components():
    d, info = aggregate("aligned_mtl", J3)
    w = weights_of(info)
    # the aligned Jacobian B^T J has orthogonal rows of equal norm: its Gramian is a multiple of identity
    g = J3 @ J3.T
    lam, v = torch.linalg.eigh(g)
    b = lam.min().sqrt() * v @ torch.diag(lam.rsqrt()) @ v.T
    aligned = b @ J3
    gram = aligned @ aligned.T
    torch.testing.assert_close(gram, gram.diagonal().mean() * torch.eye(3, dtype=torch.float64), rtol=1e-5,
                               atol=1e-8)
    torch.testing.assert_close(d, aligned.sum(0))  # the official code sums the aligned gradients
    torch.testing.assert_close(w, b @ torch.ones(3, dtype=torch.float64))
    d_mean, _ = aggregate("aligned_mtl", J3, scale="mean")
    torch.testing.assert_close(d_mean, aligned.mean(0))


ORDER_INVARIANT = [n for n in balancing.BALANCERS.names()
                   if issubclass(balancing.BALANCERS.get(n), balancing.JacobianAggregator)
                   and balancing.BALANCERS.get(n).order_invariant and n not in ("graddrop",)]


@pytest.mark.parametrize("name", ORDER_INVARIANT)
def test_aggregators_are_invariant_to_task_order(name):
    if name in SOLVER_METHODS:
        pytest.importorskip("cvxpy")
    opts = {"on": "params"}
    d, _ = aggregate(name, J3, **opts)
    for perm in itertools.permutations(range(3)):
        dp, _ = aggregate(name, J3[list(perm)], **opts)
        torch.testing.assert_close(dp, d, rtol=1e-4, atol=1e-6, msg=f"{name} {perm}")


def test_failed_solver_falls_back_to_equal_weights(monkeypatch):
    bal = balancing.get("mgda", tasks=["t0", "t1", "t2"])

    def broken(jac, gramian):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(bal, "aggregate", broken)
    theta, losses = linear_losses(J3)
    with pytest.warns(RuntimeWarning, match="solver exploded"):
        info = bal.backward(losses, shared=[theta])
    assert info["fallback"] == 1 and info["weights"] == {"t0": 1.0, "t1": 1.0, "t2": 1.0}
    torch.testing.assert_close(theta.grad, J3.sum(0))


def test_non_finite_results_and_rows_never_reach_the_update(monkeypatch):
    bal = balancing.get("mgda", tasks=["t0", "t1", "t2"])
    monkeypatch.setattr(bal, "aggregate", lambda j, g: (torch.full_like(j[0], float("nan")), None))
    theta, losses = linear_losses(J3)
    with pytest.warns(RuntimeWarning):
        info = bal.backward(losses, shared=[theta])
    assert info["fallback"] == 1 and torch.isfinite(theta.grad).all()
    rows = J3.clone()
    rows[1, 0] = float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d, info = aggregate("upgrad", rows)
    assert info["nonfinite_tasks"] == ["t1"] and torch.isfinite(d).all()
    assert all(math.isfinite(w) for w in info["weights"].values())


def test_zero_gradients_give_finite_weights():
    for name in ("mgda", "imtl", "upgrad", "aligned_mtl", "pcgrad", "dualproj", "fairgrad", "gradvac"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a fallback is allowed, a NaN is not
            d, info = aggregate(name, torch.zeros(3, 4, dtype=torch.float64), **({"loss_scale": False}
                                                                              if name == "imtl" else {}))
        assert torch.isfinite(d).all(), name
        assert all(math.isfinite(w) for w in info["weights"].values()), name


def test_missing_solver_fails_with_install_hint(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "cvxpy" else real(n, *a))
    with pytest.raises(MtlkitError, match=r"pip install 'mtlkit\[solvers\]'"):
        balancing.get("nash_mtl", tasks=["a", "b"])


def test_mgda_ub_uses_the_representation_gradients():
    """on=features: the weights come from ∂L_t/∂z, and the update is their weighted pull-back."""
    torch.manual_seed(0)
    w_enc = torch.nn.Parameter(torch.randn(3, 4, dtype=torch.float64))
    x = torch.randn(5, 4, dtype=torch.float64)
    z = x @ w_enc.T
    heads = [torch.randn(3, dtype=torch.float64) for _ in range(2)]
    losses = {"a": (z @ heads[0]).pow(2).mean(), "b": (z @ heads[1]).sin().mean()}
    gz = torch.stack([torch.autograd.grad(l, z, retain_graph=True)[0].reshape(-1) for l in losses.values()])
    info = balancing.get("mgda_ub", tasks=["a", "b"], epsilon=1e-8, max_iters=1000).backward(
        losses, shared=[w_enc], features=[z])
    w = weights_of(info)
    # two-task min-norm closed form on the representation gradients
    g1, g2 = gz[0], gz[1]
    gamma = float(((g2 - g1) @ g2) / ((g1 - g2) @ (g1 - g2)))
    gamma = min(max(gamma, 0.0), 1.0)
    torch.testing.assert_close(w, torch.tensor([gamma, 1 - gamma], dtype=torch.float64), rtol=1e-3, atol=1e-4)
    expected = (w[0] * gz[0] + w[1] * gz[1]).reshape(5, 3).T @ x
    torch.testing.assert_close(w_enc.grad, expected)


def _nash_run(solver: str, steps: list[torch.Tensor], **options) -> list[torch.Tensor]:
    theta = torch.nn.Parameter(torch.zeros(steps[0].shape[1], dtype=torch.float64))
    bal = balancing.get("nash_mtl", tasks=[f"t{i}" for i in range(steps[0].shape[0])], solver=solver,
                        max_norm=0.0, **options)
    out = []
    for rows in steps:
        info = bal.backward({f"t{i}": rows[i] @ theta for i in range(rows.shape[0])}, shared=[theta])
        out.append(weights_of(info))
    return out


def test_nash_mtl_newton_reaches_the_official_solution_within_its_tolerance():
    """The default solver (warm-started Newton) and the official cvxpy iteration (TorchJD / nash-mtl) agree
    within the official stopping tolerance over several steps of a changing Jacobian; Newton's α satisfies
    Gα = 1/α to round-off."""
    pytest.importorskip("cvxpy")
    g = torch.Generator().manual_seed(0)
    for t in (3, 5):
        base = torch.randn(t, 9, generator=g, dtype=torch.float64)
        steps = [base + 0.2 * k * torch.randn(t, 9, generator=g, dtype=torch.float64) for k in range(4)]
        newton, official = _nash_run("newton", steps), _nash_run("official", steps)
        for j, a, b in zip(steps, newton, official, strict=True):
            gram = j @ j.T
            assert float((gram @ a - 1 / a).norm() / (1 / a).norm()) < 1e-10
            assert float((a - b).abs().max() / b.abs().max()) < 1e-3


def test_nash_mtl_update_weights_every_reuses_alpha_and_resumes():
    j1, j2, j3 = J3, J3.flip(0), J3 * torch.tensor([[1.0], [2.0], [0.5]], dtype=torch.float64)
    a1, a2, a3 = _nash_run("newton", [j1, j2, j3], update_weights_every=2)
    torch.testing.assert_close(a2, a1)  # step 2 reuses step 1's α
    assert float((a3 - a1).abs().max()) > 1e-3
    theta = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    bal = balancing.get("nash_mtl", tasks=["a", "b", "c"], update_weights_every=2)
    bal.backward({k: J3[i] @ theta for i, k in enumerate("abc")}, shared=[theta])
    bal2 = balancing.get("nash_mtl", tasks=["a", "b", "c"], update_weights_every=2)
    bal2.load_state_dict(bal.state_dict())
    w = bal.backward({k: j2[i] @ theta for i, k in enumerate("abc")}, shared=[theta])["weights"]
    w2 = bal2.backward({k: j2[i] @ theta for i, k in enumerate("abc")}, shared=[theta])["weights"]
    assert w2 == w


def test_nash_mtl_singular_gramian_falls_back_without_breaking_the_step():
    """G = [[0, 0], [0, 1]] has no positive solution of Gα = 1/α: Newton gives up, the official iteration
    (or, where that fails too, equal weights) decides, and the update stays finite."""
    pytest.importorskip("cvxpy")
    rows = torch.tensor([[0.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert balancing._nashsolve.nash_weights(rows @ rows.T) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        d, info = aggregate("nash_mtl", rows)
    assert torch.isfinite(d).all() and all(math.isfinite(w) for w in info["weights"].values())
