"""Property-based tests of the aggregators over families of Jacobians (hypothesis, as TorchJD tests its own).

Jacobians: T = 2..5 tasks, n = 2..7 coordinates, entries in [-3, 3], kept when the Gramian is well
conditioned (the solvers' stated accuracy needs it). Properties: permutation equivariance of the update
(weights permute with the tasks), non-conflict where a method promises it (UPGrad, DualProj, MGDA),
behaviour under scaling one task's gradient (Nash-MTL and α=1 FairGrad: the update does not change;
IMTL-G: its line does not change) and all gradients (degree-1 homogeneity), AvgNorm's
w_i·||g_i|| = S. Derandomised, so the suite is deterministic.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mtlkit import balancing

from .balancing_helpers import linear_losses

D = torch.float64
FAST = settings(max_examples=15, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def jacobians(draw, min_t: int = 2, max_t: int = 5, full_rank: bool = True):
    t = draw(st.integers(min_t, max_t))
    n = draw(st.integers(t if full_rank else 2, 7))
    a = draw(hnp.arrays(np.float64, (t, n), elements=st.floats(-3, 3, allow_nan=False, allow_infinity=False)))
    j = torch.from_numpy(a)
    norms = j.norm(dim=1)
    assume(bool((norms > 0.1).all()))
    if full_rank:
        ev = torch.linalg.eigvalsh(j @ j.T)
        assume(float(ev.min()) > 1e-3 * float(ev.max()))
    return j


def solver_ok(name: str) -> None:
    cls = balancing.BALANCERS.get(name)
    if any(importlib.util.find_spec(m) is None for m in cls.requires):
        pytest.skip(f"{name} needs {cls.requires}")


def aggregate(name: str, j: torch.Tensor, **options) -> tuple[torch.Tensor, torch.Tensor]:
    theta, losses = linear_losses(j)
    bal = balancing.get(name, tasks=list(losses), **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a solver fallback is a failure here
        info = bal.backward(losses, shared=[theta])
    return theta.grad.detach().clone(), torch.tensor(list(info["weights"].values()), dtype=D)


# method -> (options, relative tolerance, settings)
EQUIVARIANT = {
    "mgda": ({}, 1e-9, FAST),
    "imtl": ({"loss_scale": False}, 1e-7, FAST),
    "aligned_mtl": ({}, 1e-7, FAST),
    "upgrad": ({}, 1e-6, FAST),
    "dualproj": ({}, 1e-6, FAST),
    "cagrad": ({}, 1e-3, SLOW),
    "fairgrad": ({"max_norm": 0.0}, 1e-4, SLOW),
    "nash_mtl": ({"max_norm": 0.0}, 2e-2, SLOW),
}


def close(a: torch.Tensor, b: torch.Tensor, rel: float) -> bool:
    return float((a - b).abs().max()) <= rel * max(float(b.abs().max()), 1e-12)


@pytest.mark.parametrize("name", sorted(EQUIVARIANT))
def test_update_is_permutation_equivariant(name):
    solver_ok(name)
    options, rel, sett = EQUIVARIANT[name]

    @sett
    @given(j=jacobians(), data=st.data())
    def prop(j, data):
        perm = data.draw(st.permutations(list(range(j.shape[0]))))
        d, w = aggregate(name, j, **options)
        dp, wp = aggregate(name, j[perm], **options)
        assert close(dp, d, rel), (name, perm)
        assert close(wp, w[perm], rel), (name, perm)

    prop()


@FAST
@given(j=jacobians(full_rank=False))
def test_mgda_update_conflicts_with_no_task(j):
    """The min-norm point d satisfies g_i·d ≥ ||d||² for every task (its optimality condition)."""
    d, _ = aggregate("mgda", j)
    scale = float((j * j).sum(1).max())
    assert bool((j @ d >= d @ d - 1e-9 * scale).all())


@pytest.mark.parametrize("name", ["upgrad", "dualproj"])
def test_dual_cone_methods_conflict_with_no_task(name):
    """J d = tr(G)(μ - εv) ≥ -ε tr(G) v with ε = 1e-4 the authors' regularisation of G/tr(G) (TorchJD
    ``_dual_cone.py``): no conflict up to that term."""
    solver_ok(name)

    @FAST
    @given(j=jacobians(full_rank=False))
    def prop(j):
        d, w = aggregate(name, j)
        tr = float((j * j).sum())
        assert bool((j @ d >= -1e-4 * tr * w.abs().max() - 1e-9 * tr).all())

    prop()


@pytest.mark.parametrize("name,options,rel", [("nash_mtl", {"max_norm": 0.0}, 2e-2),
                                              ("fairgrad", {"max_norm": 0.0, "alpha": 1.0}, 1e-4)])
def test_scaling_one_task_leaves_the_bargaining_update_unchanged(name, options, rel):
    """Nash-MTL (Navon et al., Thm 5.1) and FairGrad with α = 1 (proportional fairness, the same solution):
    g_k -> c g_k gives α_k -> α_k / c and the same update."""
    solver_ok(name)

    @SLOW
    @given(j=jacobians(), data=st.data())
    def prop(j, data):
        k = data.draw(st.integers(0, j.shape[0] - 1))
        c = data.draw(st.floats(0.2, 5.0))
        js = j.clone()
        js[k] *= c
        d, w = aggregate(name, j, **options)
        ds, ws = aggregate(name, js, **options)
        assert close(ds, d, rel)
        expected = w.clone()
        expected[k] /= c
        assert close(ws, expected, rel)

    prop()


@FAST
@given(j=jacobians(), data=st.data())
def test_imtl_g_direction_ignores_the_scale_of_one_task(j, data):
    """IMTL-G's update has equal projections on the unit gradients; scaling g_k only rescales it (by a
    factor of either sign: the weights are normalised by their sum)."""
    k = data.draw(st.integers(0, j.shape[0] - 1))
    c = data.draw(st.floats(0.2, 5.0))
    js = j.clone()
    js[k] *= c
    d, _ = aggregate("imtl", j, loss_scale=False)
    ds, _ = aggregate("imtl", js, loss_scale=False)
    proj = (j / j.norm(dim=1, keepdim=True)) @ d
    assert close(proj, proj.mean().expand_as(proj), 1e-7)
    cos = float(d @ ds) / float(d.norm() * ds.norm())
    assert abs(cos) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("name", ["mgda", "imtl", "aligned_mtl", "upgrad", "dualproj", "pcgrad"])
def test_scaling_every_gradient_scales_the_update(name):
    solver_ok(name)
    options = {"loss_scale": False} if name == "imtl" else {}

    @FAST
    @given(j=jacobians(), c=st.floats(0.1, 10.0))
    def prop(j, c):
        torch.manual_seed(0)
        d, _ = aggregate(name, j, **options)
        torch.manual_seed(0)
        dc, _ = aggregate(name, c * j, **options)
        assert close(dc, c * d, 1e-6)

    prop()


@FAST
@given(j=jacobians(full_rank=False))
def test_avgnorm_weighted_gradients_all_have_norm_s(j):
    theta, losses = linear_losses(j)
    info = balancing.get("avgnorm", tasks=list(losses), params="all").backward(losses, shared=[theta])
    w = torch.tensor(list(info["weights"].values()), dtype=D)
    s = float(j.sum(0).norm())
    torch.testing.assert_close(w * j.norm(dim=1), torch.full_like(w, s), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(theta.grad, w @ j, rtol=1e-12, atol=1e-12)
