"""Reference parity: every registered method against an independent implementation of its official formula.

Each reference below is written here from the paper and the authors' code (file and line cited; read, not
copied), in float64, and compared with what ``mtlkit.balancing`` computes on fixed small problems: T = 3 and
T = 5 tasks, conflicting (every pair g_i·g_j < 0) and non-conflicting gradients, several steps for stateful
methods. Compared: the update (the shared parameters' gradient) and the weights. Tolerances: 1e-10 for
closed forms; the solver's own tolerance for QP / least-squares / convex-programme methods.

On the linear problem L_t = a_t·θ + c_t (θ = 0) the Jacobian rows are exactly a_t and the loss values c_t,
so ``θ.grad`` after ``backward`` is the update. ``benchmarks/parity.py`` runs the same checks and writes the
table ``benchmarks/results/parity.md``.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtlkit import balancing
from mtlkit.errors import MtlkitError

D = torch.float64
Pairs = list[tuple[torch.Tensor, torch.Tensor]]


# ------------------------------------------------------------------------------------------- problems
def jacobian(t: int, n: int, conflict: bool, seed: int) -> torch.Tensor:
    """T rows in R^n: conflicting (centred simplex directions of different lengths, small noise: every pair
    has a negative dot product) or non-conflicting (positive entries)."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(0.6, 2.5, t, dtype=D)[torch.randperm(t, generator=g)]
    if conflict:
        basis = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=D))[0][:t]
        rows = (torch.eye(t, dtype=D) - 1.0 / t) @ basis
        rows = rows / rows.norm(dim=1, keepdim=True)
        rows = scales[:, None] * rows + 0.01 * torch.randn(t, n, generator=g, dtype=D)
    else:
        rows = scales[:, None] * (torch.rand(t, n, generator=g, dtype=D) + 0.1)
    return rows


PROBLEMS = {f"T{t}-{'conflict' if c else 'aligned'}": (t, c) for t in (3, 5) for c in (True, False)}


def problem(name: str, step: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(J, loss values) of a problem at a step (stateful methods see a new J and new losses each step)."""
    t, c = PROBLEMS[name]
    seed = 100 * t + 10 * c + step
    values = torch.tensor([1.3, 0.7, 2.1, 0.4, 1.0], dtype=D)[:t] * (1.0 - 0.1 * step)
    return jacobian(t, t + 3, c, seed), values


#: the engine the checks run the Gramian-based aggregators with (``test_..._with_the_autogram_engine``)
ENGINE = {"name": "jacobian"}


class LinearModule(torch.nn.Module):
    """θ in a module, as TorchJD's autogram engine needs (it hooks modules): forward(rows) = rows @ θ."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.theta = torch.nn.Parameter(torch.zeros(n, dtype=D))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return rows @ self.theta


def run(bal, rows: torch.Tensor, values: torch.Tensor | None = None, **context) -> tuple[torch.Tensor, dict]:
    """One backward on L_t = a_t·θ + c_t; returns (θ.grad, info)."""
    if getattr(bal, "engine", "jacobian") == "autogram":
        lin = LinearModule(rows.shape[1])
        bal.setup(model=lin)  # hooks before the forward
        out = lin(rows)
        vals = values if values is not None else torch.ones(rows.shape[0], dtype=D)
        losses = {f"t{i}": out[i] + vals[i] for i in range(rows.shape[0])}
        info = bal.backward(losses, shared=[lin.theta], last_shared=[lin.theta], model=lin, **context)
        assert info.get("engine") == "autogram"
        return lin.theta.grad.detach().clone(), info
    theta = torch.nn.Parameter(torch.zeros(rows.shape[1], dtype=D))
    vals = values if values is not None else torch.ones(rows.shape[0], dtype=D)
    losses = {f"t{i}": rows[i] @ theta + vals[i] for i in range(rows.shape[0])}
    info = bal.backward(losses, shared=[theta], last_shared=[theta], **context)
    return theta.grad.detach().clone(), info


def weights_of(info: dict) -> torch.Tensor:
    return torch.tensor(list(info["weights"].values()), dtype=D)


def build(name: str, t: int, **options):
    cls = balancing.BALANCERS.get(name)
    if any(importlib.util.find_spec(m) is None for m in cls.requires):
        pytest.skip(f"{name} needs {cls.requires} (mtlkit[solvers])")
    if ENGINE["name"] == "autogram" and autogram_applies(name, options):
        options = {**options, "engine": "autogram"}
    return balancing.get(name, tasks=[f"t{i}" for i in range(t)], **options)


def autogram_applies(name: str, options: dict | None = None) -> bool:
    cls = balancing.BALANCERS.get(name)
    on = (options or {}).get("on") or getattr(cls, "default_on", "features")
    return "engine" in cls.options and on == "params"


def clip(d: torch.Tensor, max_norm: float) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_`` on one vector, written out: coef = max_norm / (||d|| + 1e-6)."""
    coef = max_norm / (float(d.norm()) + 1e-6)
    return d * min(coef, 1.0)


# ------------------------------------------------------------------------------------------- solvers (exact)
def kkt_simplex_min_norm(g: torch.Tensor) -> torch.Tensor:
    """argmin_{w ∈ simplex} wᵀGw by enumerating active sets (KKT: G_SS w_S = -μ1, 1ᵀw_S = 1, w_S ≥ 0,
    (Gw)_i ≥ wᵀGw for all i). Exact, exponential in T: fine for T ≤ 6."""
    t = g.shape[0]
    best, best_val = None, math.inf
    for r in range(1, t + 1):
        for s in itertools.combinations(range(t), r):
            idx = list(s)
            a = torch.zeros(r + 1, r + 1, dtype=D)
            a[:r, :r], a[:r, r], a[r, :r] = g[idx][:, idx], 1.0, 1.0
            b = torch.zeros(r + 1, dtype=D)
            b[r] = 1.0
            try:
                v = torch.linalg.solve(a, b)[:r]
            except RuntimeError:
                continue
            if (v < -1e-13).any():
                continue
            w = torch.zeros(t, dtype=D)
            w[idx] = v
            val = float(w @ g @ w)
            if (g @ w >= val - 1e-12 * float(g.diagonal().max())).all() and val < best_val:
                best, best_val = w, val
    return best


def kkt_box_qp(g: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """argmin_{v ≥ u} vᵀGv (G positive definite) by enumerating the free set F: G_FF v_F = -G_{F,F̄} u_F̄,
    v_F ≥ u_F, (Gv)_F̄ ≥ 0."""
    t = g.shape[0]
    for r in range(t + 1):
        for s in itertools.combinations(range(t), r):
            free = list(s)
            fixed = [i for i in range(t) if i not in free]
            v = u.clone()
            if free:
                rhs = -(g[free][:, fixed] @ u[fixed]) if fixed else torch.zeros(len(free), dtype=D)
                v[free] = torch.linalg.solve(g[free][:, free], rhs)
            if (v >= u - 1e-13).all() and (g @ v)[fixed].ge(-1e-13).all():
                return v
    raise AssertionError("no KKT point")


def newton_positive(f: Callable, jac: Callable, x0: np.ndarray, iters: int = 200) -> np.ndarray:
    """Damped Newton for F(x) = 0 with x > 0 (fractional steps keep x positive), to machine precision."""
    x = x0.astype(np.float64)
    for _ in range(iters):
        fx = f(x)
        if np.linalg.norm(fx) < 1e-15 * max(1.0, np.linalg.norm(x)):
            break
        step = np.linalg.solve(jac(x), -fx)
        s = 1.0
        while np.any(x + s * step <= 0):
            s *= 0.5
        x = x + s * step
    return x


# ------------------------------------------------------------------------------------------- references
def ref_pcgrad(j: torch.Tensor) -> torch.Tensor:
    """Yu et al. Alg. 1 (tianheyu927/PCGrad ``PCGrad_tf.py``; AvivNavon/nash-mtl ``methods/weight_methods.py``
    L497-519; LibMTL ``PCGrad.py`` L30-37): g_i^PC -= (g_i^PC·g_j)/||g_j||² g_j for each conflicting
    original g_j in a random order, then the sum. The random order is drawn as TorchJD does (one
    ``torch.randperm(T)`` per task), so with the same seed both see the same orders."""
    t = j.shape[0]
    out = torch.zeros_like(j[0])
    for i in range(t):
        gi = j[i].clone()
        for k in torch.randperm(t).tolist():
            if k != i and gi @ j[k] < 0:
                gi = gi - (gi @ j[k]) / (j[k] @ j[k]) * j[k]
        out += gi
    return out


def ref_cagrad(j: torch.Tensor, c: float = 0.4, mean: bool = False) -> torch.Tensor:
    """Cranial-XIX/CAGrad ``nyuv2/utils.py`` L377-400 (``cagrad``, rescale=1) and L417-418 (``newgrad * 3``,
    "to match the sum loss"); the same in nash-mtl ``methods/weight_methods.py`` L576-610, L628-629: w
    minimises wᵀG b + √φ sqrt(wᵀGw) on the simplex (b = 1/T, √φ = c ||g₀||), g = g₀ + √φ/||g_w|| g_w,
    then g / (1 + c²) and × T. Solved here with SLSQP to 1e-15 (the official code uses scipy's default,
    looser, tolerance); the official 1e-8 guards are left out."""
    from scipy.optimize import minimize

    t = j.shape[0]
    g = (j @ j.T).numpy()
    b = np.full(t, 1.0 / t)
    sqrt_phi = c * math.sqrt(float(b @ g @ b))

    def obj(w):
        return float(w @ g @ b + sqrt_phi * math.sqrt(max(w @ g @ w, 1e-300)))

    def grad(w):
        return g @ b + sqrt_phi * (g @ w) / math.sqrt(max(w @ g @ w, 1e-300))

    res = minimize(obj, b, jac=grad, bounds=[(0, 1)] * t, method="SLSQP", options={"ftol": 1e-15, "maxiter": 1000},
                   constraints=({"type": "eq", "fun": lambda w: 1 - w.sum()},))
    w = torch.tensor(res.x, dtype=D)
    gw = w @ j
    d = j.mean(0) + sqrt_phi / gw.norm() * gw
    d = d / (1 + c**2)
    return d if mean else t * d


def ref_imtl_g(j: torch.Tensor) -> torch.Tensor:
    """IMTL-G closed form (Liu et al. 2021 Eq. 13; nash-mtl ``methods/weight_methods.py`` L680-735, LibMTL
    ``IMTL.py`` L28-34): D = g₁ - g_{2..T}, U = u₁ - u_{2..T} (unit gradients), α_{2..T} = g₁Uᵀ(DUᵀ)⁻¹,
    α₁ = 1 - Σ α_{2..T}."""
    u = j / j.norm(dim=1, keepdim=True)
    dm, um = j[0] - j[1:], u[0] - u[1:]
    a = (j[0] @ um.T) @ torch.linalg.inv(dm @ um.T)
    return torch.cat([(1 - a.sum()).reshape(1), a])


def ref_aligned_weights(j: torch.Tensor, mean: bool = False) -> torch.Tensor:
    """Aligned-MTL (Senushkin et al. 2023, Alg. 1; SamsungLabs/MTL ``ProcrustesSolver`` as LibMTL
    ``Aligned_MTL.py`` L27-38): eigen-decomposition of G = JJᵀ, rank cut at λ_max·T·eps,
    B = √λ_min V Λ^{-1/2} Vᵀ, weights B·1 (the aligned gradients summed)."""
    lam, v = torch.linalg.eigh(j @ j.T)
    keep = lam > lam.max() * j.shape[0] * torch.finfo(D).eps
    lam, v = lam[keep], v[:, keep]
    b = lam.min().sqrt() * v @ torch.diag(lam.rsqrt()) @ v.T
    w = b.sum(0)
    return w / j.shape[0] if mean else w


def ref_nash_alpha(j: torch.Tensor) -> torch.Tensor:
    """The Nash bargaining weights (Navon et al. 2022, Eq. 4 / Thm 5.1): α > 0 with Gα = 1/α, solved by
    Newton to machine precision. The official iteration (nash-mtl ``methods/weight_methods.py`` L123-155)
    stops at ||Gα - 1/α|| < 1e-3 on G/||G||, so it lies within that of this point."""
    g = (j @ j.T).numpy()
    x0 = 1.0 / np.sqrt(np.diag(g))
    a = newton_positive(lambda x: g @ x - 1.0 / x, lambda x: g + np.diag(1.0 / x**2), x0)
    return torch.tensor(a, dtype=D)


def ref_fairgrad_w(j: torch.Tensor, alpha: float) -> torch.Tensor:
    """FairGrad (Ban & Ji 2024, Eq. 4; OptMN-Lab/fairgrad ``methods/weight_methods.py`` L811-826): w > 0
    with Gw = w^(-1/α), by Newton (the official code: scipy ``least_squares`` from 1/T, default tolerances)."""
    g = (j @ j.T).numpy()
    x0 = np.full(j.shape[0], 1.0 / j.shape[0])
    w = newton_positive(lambda x: g @ x - x ** (-1.0 / alpha),
                        lambda x: g + np.diag((1.0 / alpha) * x ** (-1.0 / alpha - 1)), x0)
    return torch.tensor(w, dtype=D)


def torchjd_gramian(j: torch.Tensor) -> torch.Tensor:
    """The Gramian the authors' projector solves with (TorchJD ``_linalg/_dual_cone.py`` L109 with
    ``_gramian.py`` ``normalize`` / ``regularize``): G / tr(G) + 1e-4 I."""
    g = j @ j.T
    return g / g.trace() + 1e-4 * torch.eye(j.shape[0], dtype=D)


def ref_upgrad_weights(j: torch.Tensor) -> torch.Tensor:
    """UPGrad (Quinton & Rey 2024, Eq. 5; TorchJD ``aggregation/_upgrad.py`` L37-40): v_i = argmin_{v ≥ e_i/T}
    vᵀGv for each task (the projection of g_i/T onto the dual cone), weights Σ_i v_i."""
    g, t = torchjd_gramian(j), j.shape[0]
    return sum(kkt_box_qp(g, torch.eye(t, dtype=D)[i] / t) for i in range(t))


def ref_dualproj_weights(j: torch.Tensor) -> torch.Tensor:
    """DualProj (TorchJD ``aggregation/_dualproj.py`` L36-39): v = argmin_{v ≥ 1/T} vᵀGv."""
    g, t = torchjd_gramian(j), j.shape[0]
    return kkt_box_qp(g, torch.full((t,), 1.0 / t, dtype=D))


class RefGradVac:
    """Gradient Vaccine (Wang et al. 2021, Alg. 1; LibMTL ``GradVac.py`` L57-74, whole model): for each i and
    each other j in random order, φ = cos(g_i^PC, g_j); if φ < φ̂_ij add
    ||g_i^PC||(φ̂√(1-φ²) - φ√(1-φ̂²)) / (||g_j||√(1-φ̂²) + 1e-8) · g_j; φ̂_ij ← (1-β)φ̂_ij + βφ; sum. Orders drawn
    as TorchJD (``torch.randperm`` over the other tasks), so the same seed gives the same orders."""

    def __init__(self, t: int, beta: float = 0.5) -> None:
        self.phi = torch.zeros(t, t, dtype=D)
        self.beta = beta

    def __call__(self, j: torch.Tensor) -> torch.Tensor:
        t = j.shape[0]
        pc = j.clone()
        for i in range(t):
            others = [k for k in range(t) if k != i]
            for idx in torch.randperm(len(others)).tolist():
                k = others[idx]
                phi = (pc[i] @ j[k]) / (pc[i].norm() * j[k].norm() + 1e-8)
                hat = self.phi[i, k]
                if phi < hat:
                    root_phi, root_hat = (1 - phi**2).clamp_min(0).sqrt(), (1 - hat**2).clamp_min(0).sqrt()
                    w = pc[i].norm() * (hat * root_phi - phi * root_hat) / (j[k].norm() * root_hat + 1e-8)
                    pc[i] = pc[i] + w * j[k]
                self.phi[i, k] = (1 - self.beta) * hat + self.beta * phi
        return pc.sum(0)


# ------------------------------------------------------------------------------------------- checks
@dataclass
class Check:
    method: str
    reference: str
    tol: float
    run: Callable[[], Pairs]


CHECKS: list[Check] = []


def check(method: str, reference: str, tol: float = 1e-10):
    def deco(fn: Callable[[], Pairs]) -> Callable[[], Pairs]:
        CHECKS.append(Check(method, reference, tol, fn))
        return fn

    return deco


def run_check(chk: Check) -> tuple[float, int]:
    """(max relative difference, number of compared tensors), in float64 throughout: the methods' own
    parameters (UW's s, FAMO's logits, GradNorm's weights, IMTL's scales) are created in the default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(D)
    try:
        pairs = chk.run()
    finally:
        torch.set_default_dtype(old)
    return rel_diff(pairs), len(pairs)


def rel_diff(pairs: Pairs) -> float:
    """max over pairs of ||ours - ref||_∞ / ||ref||_∞."""
    out = 0.0
    for ours, ref in pairs:
        scale = max(float(ref.abs().max()), 1e-300)
        out = max(out, float((ours.to(D) - ref).abs().max()) / scale)
    return out


@check("equal", "Σ_t L_t (LibMTL EW.py)")
def _equal() -> Pairs:
    out = []
    for name in PROBLEMS:
        j, v = problem(name)
        d, info = run(build("equal", j.shape[0]), j, v)
        out += [(d, j.sum(0)), (weights_of(info), torch.ones(j.shape[0], dtype=D))]
    return out


@check("fixed", "Σ_t λ_t L_t")
def _fixed() -> Pairs:
    out = []
    for name in PROBLEMS:
        j, v = problem(name)
        lam = torch.linspace(0.5, 4.0, j.shape[0], dtype=D)
        d, _ = run(build("fixed", j.shape[0], weights={f"t{i}": float(x) for i, x in enumerate(lam)}), j, v)
        out.append((d, lam @ j))
    return out


@check("uw", "lorenmt/mtan im2im_pred/utils.py L168 (init -0.5: model_segnet_mtan.py L75); nash-mtl "
       "Uncertainty (init 0)")
def _uw() -> Pairs:
    """Σ_t 1/(2e^{s_t}) L_t + s_t/2; its s-gradient ½ - L_t/(2e^{s_t}); three SGD steps on s."""
    out = []
    for init in (0.0, -0.5):
        for name in PROBLEMS:
            bal = build("uw", PROBLEMS[name][0], init=init)
            opt = torch.optim.SGD(bal.parameters(), lr=0.1)
            s = torch.full((PROBLEMS[name][0],), init, dtype=D)
            for step in range(3):
                j, v = problem(name, step)
                opt.zero_grad()
                d, info = run(bal, j, v)
                ref_s_grad = 0.5 - 0.5 * torch.exp(-s) * v
                out += [(d, (0.5 * torch.exp(-s)) @ j), (bal.log_vars.grad.to(D).clone(), ref_s_grad)]
                out.append((weights_of(info), 0.5 * torch.exp(-s)))
                opt.step()
                s = s - 0.1 * (0.5 - 0.5 * torch.exp(-s) * v)
    return out


@check("dwa", "lorenmt/mtan im2im_pred/utils.py L139-147, LibMTL DWA.py L23-27 (per-epoch means)")
def _dwa() -> Pairs:
    """w = T·softmax(r/2), r_t = mean loss of epoch k-1 / of epoch k-2; 1 for the first two epochs."""
    out = []
    epoch_iters, epochs = 3, 5
    for name in PROBLEMS:
        t = PROBLEMS[name][0]
        bal = build("dwa", t)
        bal.setup(epoch_iters=epoch_iters)
        g = torch.Generator().manual_seed(t)
        seq = [[torch.rand(t, generator=g, dtype=D) + 0.2 for _ in range(epoch_iters)] for _ in range(epochs)]
        means = [torch.stack(e).mean(0) for e in seq]
        j, _ = problem(name)
        for k, e in enumerate(seq):
            ref = torch.ones(t, dtype=D) if k < 2 else t * F.softmax((means[k - 1] / means[k - 2]) / 2.0, dim=0)
            for v in e:
                d, info = run(bal, j, v)
                out += [(weights_of(info), ref), (d, ref @ j)]
    return out


@check("dtp", "Guo et al. 2018 Eq. 2: w = -(1-κ̄)^γ log κ̄, κ̄ a moving average of the KPI (no official code)")
def _dtp() -> Pairs:
    out = []
    for name in PROBLEMS:
        t = PROBLEMS[name][0]
        bal = build("dtp", t, gamma=2.0, momentum=0.7)
        g = torch.Generator().manual_seed(t)
        kbar = None
        for _ in range(3):
            kpi = torch.rand(t, generator=g, dtype=D) * 0.9 + 0.05
            kbar = kpi if kbar is None else 0.7 * kbar + 0.3 * kpi
            j, v = problem(name)
            d, info = run(bal, j, v, kpi={f"t{i}": float(x) for i, x in enumerate(kpi)})
            ref = -((1 - kbar) ** 2) * torch.log(kbar)
            out += [(weights_of(info), ref), (d, ref @ j)]
    return out


@check("rlw", "LibMTL RLW.py L20: softmax(torch.randn(T)) (same seed, same weights)")
def _rlw() -> Pairs:
    out = []
    for name in PROBLEMS:
        t = PROBLEMS[name][0]
        j, v = problem(name)
        bal = build("rlw", t)
        for seed in range(3):
            torch.manual_seed(seed)
            d, info = run(bal, j, v)
            torch.manual_seed(seed)
            ref = F.softmax(torch.randn(t), dim=-1).to(D)
            out += [(weights_of(info), ref), (d, ref @ j)]
    return out


@check("gls", "LibMTL GLS.py L19: (Π_t L_t)^(1/T)")
def _gls() -> Pairs:
    out = []
    for name in PROBLEMS:
        j, v = problem(name)
        theta = torch.zeros(j.shape[1], dtype=D, requires_grad=True)
        ref = torch.autograd.grad(torch.pow(torch.prod(j @ theta + v), 1.0 / j.shape[0]), theta)[0]
        d, _ = run(build("gls", j.shape[0]), j, v)
        out.append((d, ref))
    return out


@check("famo", "Cranial-XIX/FAMO methods/weight_methods.py L127-145 (+ Adam, clip_grad_norm_ L78)")
def _famo() -> Pairs:
    """z = softmax(ξ), D = L + 1e-8, c = Σ z/D: update ∇ Σ z log D / c, clipped at 1.0; after the step
    ξ takes one Adam step (lr 0.025, weight decay γ = 1e-3, torch's L2 form) on ∂softmax(ξ)ᵀδ/∂ξ,
    δ = log D(before) - log D(after). Adam is written out here."""
    out = []
    lr, gamma, b1, b2, eps = 0.025, 1e-3, 0.9, 0.999, 1e-8
    for max_norm in (1.0, 0.0):
        for name in PROBLEMS:
            t = PROBLEMS[name][0]
            bal = build("famo", t, max_norm=max_norm)
            xi, m, vv = torch.zeros(t, dtype=D), torch.zeros(t, dtype=D), torch.zeros(t, dtype=D)
            for step in range(4):
                j, before = problem(name, step)
                after = before * torch.linspace(0.7, 1.1, t, dtype=D)
                z = torch.softmax(xi, 0)
                dd = before + 1e-8
                c = (z / dd).sum()
                w = z / (c * dd)
                ref = w @ j
                if max_norm > 0:
                    ref = clip(ref, max_norm)
                d, info = run(bal, j, before)
                out += [(d, ref), (weights_of(info), w)]
                bal.post_step({f"t{i}": after[i] for i in range(t)})
                delta = torch.log(before + 1e-8) - torch.log(after + 1e-8)
                grad = z * (delta - (z * delta).sum()) + gamma * xi  # softmax VJP, then weight decay
                m = b1 * m + (1 - b1) * grad
                vv = b2 * vv + (1 - b2) * grad**2
                xi = xi - lr * (m / (1 - b1 ** (step + 1))) / ((vv / (1 - b2 ** (step + 1))).sqrt() + eps)
                out.append((bal.logits.detach().to(D).clone(), xi))
    return out


@check("gradnorm", "Chen et al. 2018 Alg. 1 (L_grad by autograd, target held constant, renormalised to Σw = T)")
def _gradnorm() -> Pairs:
    out = []
    alpha, lr = 1.5, 0.05
    for name in PROBLEMS:
        t = PROBLEMS[name][0]
        bal = build("gradnorm", t, alpha=alpha, params="all")
        opt = torch.optim.SGD(bal.parameters(), lr=lr)
        w = torch.ones(t, dtype=D)
        first = None
        for step in range(3):
            j, v = problem(name, step)
            first = v if first is None else first
            wr = w.clone().requires_grad_(True)
            gnorm = (wr[:, None] * j).norm(dim=1)
            r = (v / first) / (v / first).mean()
            target = (gnorm.mean() * r**alpha).detach()
            ref_grad = torch.autograd.grad((gnorm - target).abs().sum(), wr)[0]
            opt.zero_grad()
            d, info = run(bal, j, v)
            out += [(weights_of(info), w), (d, w @ j), (bal.loss_weights.grad.to(D).clone(), ref_grad)]
            opt.step()
            w = (w - lr * ref_grad).clamp_min(0)
            w = w * t / w.sum()
    return out


@check("avgnorm", "imbalance paper Eq. 6: w_i = ||Σ_j g_j|| / ||g_i|| and their average (Tab. VI)")
def _avgnorm() -> Pairs:
    out = []
    for name in PROBLEMS:
        t = PROBLEMS[name][0]
        bal = build("avgnorm", t, params="all")
        total = torch.zeros(t, dtype=D)
        for step in range(3):
            j, v = problem(name, step)
            w = j.sum(0).norm() / j.norm(dim=1)
            total += w
            d, info = run(bal, j, v)
            out += [(weights_of(info), w), (d, w @ j)]
        avg = bal.report()["average_weights"]
        out.append((torch.tensor([avg[f"t{i}"] for i in range(t)], dtype=D), total / 3))
    return out


def _min_norm_check(name: str, **options) -> Pairs:
    out = []
    for prob in PROBLEMS:
        j, v = problem(prob)
        w = kkt_simplex_min_norm(j @ j.T)
        d, info = run(build(name, j.shape[0], on="params", **options), j, v)
        out += [(weights_of(info), w), (d, w @ j)]
    return out


@check("mgda", "min-norm point, KKT active sets (Sener & Koltun; isl-org/MultiObjectiveOptimization "
       "train_multi_task.py L164-181: Σ scale[t] L_t, Σ scale = 1)")
def _mgda() -> Pairs:
    return _min_norm_check("mgda")


@check("mgda_ub", "as mgda, on the representation gradients (train_multi_task.py L113-141)")
def _mgda_ub() -> Pairs:
    out = []
    torch.manual_seed(0)
    for t in (3, 5):
        w_enc = torch.nn.Parameter(torch.randn(4, 3, dtype=D))
        x = torch.randn(6, 3, dtype=D)
        z = x @ w_enc.T
        heads = torch.randn(t, 4, dtype=D)
        losses = {f"t{i}": ((z @ heads[i]) - i).pow(2).mean() for i in range(t)}
        gz = torch.stack([torch.autograd.grad(loss, z, retain_graph=True)[0].reshape(-1) for loss in losses.values()])
        w = kkt_simplex_min_norm(gz @ gz.T)
        info = build("mgda_ub", t).backward(losses, shared=[w_enc], features=[z])
        out += [(weights_of(info), w), (w_enc.grad.detach(), (w @ gz).reshape(6, 4).T @ x)]
    return out


@check("pcgrad", "Yu et al. Alg. 1 (PCGrad_tf.py; nash-mtl L497-519; LibMTL PCGrad.py L30-37), same orders")
def _pcgrad() -> Pairs:
    out = []
    for name in PROBLEMS:
        j, v = problem(name)
        for seed in range(3):
            torch.manual_seed(seed)
            d, _ = run(build("pcgrad", j.shape[0]), j, v)
            torch.manual_seed(seed)
            out.append((d, ref_pcgrad(j)))
    return out


@check("cagrad", "Cranial-XIX/CAGrad nyuv2/utils.py L377-400 + L417-418 (x T), SLSQP to 1e-15", tol=1e-4)
def _cagrad() -> Pairs:
    out = []
    for name in PROBLEMS:
        j, v = problem(name)
        d, _ = run(build("cagrad", j.shape[0]), j, v)
        dm, _ = run(build("cagrad", j.shape[0], scale="mean"), j, v)
        out += [(d, ref_cagrad(j)), (dm, ref_cagrad(j, mean=True))]
    return out


@check("graddrop", "Chen et al. Alg. 1 as LibMTL GradDrop.py L33-49 (Σ_batch sgn(A)∘∇_A L_i, one mask per "
       "feature), same draws")
def _graddrop() -> Pairs:
    return _graddrop_one_representation() + _graddrop_two_representations()


def _graddrop_two_representations() -> Pairs:
    """A representation in two tensors (multi-scale features): Algorithm 1 on their concatenated features,
    one uniform draw per feature in order (our reading for more than one tensor; LibMTL has one)."""
    out = []
    g = torch.Generator().manual_seed(11)
    w_enc = torch.nn.Parameter(torch.randn(4, 3, dtype=D, generator=g))
    x = torch.randn(5, 3, dtype=D, generator=g)
    z1 = torch.tanh(x @ w_enc.T)  # (5, 4)
    z2 = torch.sin(x @ w_enc.T).reshape(5, 2, 2)  # (5, 2, 2)
    heads = torch.randn(3, 8, dtype=D, generator=g)
    losses = {f"t{i}": ((torch.cat([z1, z2.reshape(5, 4)], 1) @ heads[i]) - i).pow(2).mean() for i in range(3)}
    per1 = torch.stack([torch.autograd.grad(loss, z1, retain_graph=True)[0] for loss in losses.values()])
    per2 = torch.stack([torch.autograd.grad(loss, z2, retain_graph=True)[0].reshape(5, 4)
                        for loss in losses.values()])
    torch.manual_seed(5)
    build("graddrop", 3).backward(losses, shared=[w_enc], features=[z1, z2])
    torch.manual_seed(5)
    per = torch.cat([per1, per2], dim=2)  # (T, batch, 8 features)
    sign = torch.cat([z1.detach().sign(), z2.detach().reshape(5, 4).sign()], dim=1)
    gsum = (per * sign).sum(1)
    p = 0.5 * (1 + gsum.sum(0) / (gsum.abs().sum(0) + 1e-7))
    u = torch.rand_like(p)
    mask = (p.gt(u) * gsum.gt(0) + p.lt(u) * gsum.lt(0)).to(D)
    grad_z = (per * mask[:, None, :]).sum(0)
    ref = torch.autograd.grad([torch.tanh(x @ w_enc.T), torch.sin(x @ w_enc.T)],
                              w_enc, [grad_z[:, :4], grad_z[:, 4:]])[0]
    out.append((w_enc.grad.detach(), ref))
    return out


def _graddrop_one_representation() -> Pairs:
    out = []
    for t in (3, 5):
        for leak in (0.0, 0.3):
            g = torch.Generator().manual_seed(t)
            w_enc = torch.nn.Parameter(torch.randn(5, 3, dtype=D, generator=g))
            x = torch.randn(6, 3, dtype=D, generator=g)
            z = torch.tanh(x @ w_enc.T)  # the representation A: batch 6 x 5 features, mixed signs
            heads = torch.nn.Parameter(torch.randn(t, 5, dtype=D, generator=g))
            losses = {f"t{i}": ((z @ heads[i]) - (-1) ** i * 0.5).pow(2).mean() for i in range(t)}
            per = torch.stack([torch.autograd.grad(loss, z, retain_graph=True)[0] for loss in losses.values()])
            torch.manual_seed(7)
            build("graddrop", t, leak=leak).backward(losses, shared=[w_enc], features=[z])
            torch.manual_seed(7)
            gsum = (per * z.detach().sign()).sum(1)  # (T, features)
            p = 0.5 * (1 + gsum.sum(0) / (gsum.abs().sum(0) + 1e-7))
            u = torch.rand_like(p)
            mask = (p.gt(u) * gsum.gt(0) + p.lt(u) * gsum.lt(0)).to(D)
            grad_z = (per * (leak + (1 - leak) * mask[:, None, :])).sum(0)
            ref = torch.autograd.grad(torch.tanh(x @ w_enc.T), w_enc, grad_z)[0]
            head_ref = torch.stack([torch.autograd.grad(loss, heads, retain_graph=True)[0][i]
                                    for i, loss in enumerate(losses.values())])
            out += [(w_enc.grad.detach(), ref), (heads.grad.detach(), head_ref)]
    return out


@check("imtl", "IMTL-G closed form (nash-mtl L680-735; LibMTL IMTL.py L23-34, IMTL-L e^s L - s)")
def _imtl() -> Pairs:
    out = []
    for name in PROBLEMS:
        j, v = problem(name)
        t = j.shape[0]
        d, info = run(build("imtl", t, loss_scale=False), j, v)
        a = ref_imtl_g(j)
        out += [(weights_of(info), a), (d, a @ j)]
        bal = build("imtl", t)
        s = torch.linspace(-0.3, 0.4, t)
        with torch.no_grad():
            bal.scales.copy_(s)
        d, info = run(bal, j, v)
        js = torch.exp(s.to(D))[:, None] * j  # gradients of e^s L - s
        a = ref_imtl_g(js)
        out += [(weights_of(info), a), (d, a @ js), (bal.scales.grad.to(D), torch.exp(s.to(D)) * v - 1)]
    return out


@check("aligned_mtl", "SamsungLabs/MTL ProcrustesSolver as LibMTL Aligned_MTL.py L27-38 (B.sum: x T)")
def _aligned() -> Pairs:
    out = []
    for name in PROBLEMS:
        j, v = problem(name)
        for mean in (False, True):
            d, info = run(build("aligned_mtl", j.shape[0], scale="mean" if mean else "sum"), j, v)
            w = ref_aligned_weights(j, mean)
            out += [(weights_of(info), w), (d, w @ j)]
    return out


@check("nash_mtl", "Gα = 1/α exactly (Newton); official stop ||Gα - 1/α|| < 1e-3 (nash-mtl L123-131), clip L269",
       tol=1e-3)
def _nash() -> Pairs:
    out = []
    for name in PROBLEMS:
        t = PROBLEMS[name][0]
        bal = build("nash_mtl", t)
        for step in range(3):
            j, v = problem(name, step)
            a = ref_nash_alpha(j)
            d, info = run(bal, j, v)
            out += [(weights_of(info), a), (d, clip(a @ j, 1.0))]
    return out


@check("fairgrad", "Gw = w^(-1/α) exactly (Newton); OptMN-Lab/fairgrad weight_methods.py L811-826, x T L845, "
       "clip L870-871", tol=1e-10)
def _fairgrad() -> Pairs:
    out = []
    for name in PROBLEMS:
        j, v = problem(name)
        t = j.shape[0]
        for alpha in (1.0, 2.0):
            w = ref_fairgrad_w(j, alpha)
            d, info = run(build("fairgrad", t, alpha=alpha), j, v)
            out += [(weights_of(info), t * w), (d, clip(t * (w @ j), 1.0))]
            d, info = run(build("fairgrad", t, alpha=alpha, scale="mean", max_norm=0.0), j, v)
            out += [(weights_of(info), w), (d, w @ j)]
    return out


@check("upgrad", "dual-cone projections by KKT (Quinton & Rey Eq. 5; TorchJD _upgrad.py, _dual_cone.py L109)",
       tol=1e-8)
def _upgrad() -> Pairs:
    out = []
    for name in PROBLEMS:
        j, v = problem(name)
        w = ref_upgrad_weights(j)
        d, info = run(build("upgrad", j.shape[0]), j, v)
        out += [(weights_of(info), w), (d, w @ j)]
    return out


@check("dualproj", "mean projected on the dual cone by KKT (TorchJD _dualproj.py, _dual_cone.py L109)", tol=1e-8)
def _dualproj() -> Pairs:
    out = []
    for name in PROBLEMS:
        j, v = problem(name)
        w = ref_dualproj_weights(j)
        d, info = run(build("dualproj", j.shape[0]), j, v)
        out += [(weights_of(info), w), (d, w @ j)]
    return out


@check("gradvac", "Wang et al. Alg. 1 as LibMTL GradVac.py L57-74 (EMA targets from 0), same orders")
def _gradvac() -> Pairs:
    out = []
    for name in PROBLEMS:
        t = PROBLEMS[name][0]
        bal = build("gradvac", t)
        ref = RefGradVac(t)
        for step in range(3):
            j, v = problem(name, step)
            torch.manual_seed(step)
            d, _ = run(bal, j, v)
            torch.manual_seed(step)
            out.append((d, ref(j)))
    return out


# ------------------------------------------------------------------------------------------- tests
def test_problems_are_what_they_claim():
    for name, (t, conflict) in PROBLEMS.items():
        for step in range(4):
            j, _ = problem(name, step)
            g = j @ j.T
            off = g[~torch.eye(t, dtype=torch.bool)]
            assert (off < 0).all() if conflict else (off > 0).all(), (name, step)


def test_every_registered_method_has_a_reference():
    assert {c.method for c in CHECKS} == set(balancing.BALANCERS.names())


@pytest.mark.parametrize("chk", CHECKS, ids=[c.method for c in CHECKS])
def test_matches_the_reference(chk: Check):
    diff, n = run_check(chk)
    assert n > 0
    assert diff <= chk.tol, f"{chk.method}: max relative difference {diff:.3g} > {chk.tol:g} ({chk.reference})"


AUTOGRAM_CHECKS = [c for c in CHECKS if autogram_applies(c.method)]


@pytest.mark.parametrize("chk", AUTOGRAM_CHECKS, ids=[c.method for c in AUTOGRAM_CHECKS])
def test_matches_the_reference_with_the_autogram_engine(chk: Check):
    """engine=autogram (TorchJD's Gramian engine: weights from the Gramian, one backward of Σ w_t L_t) meets
    the same references as the Jacobian path, for every aggregator whose weights depend on J Jᵀ only."""
    ENGINE["name"] = "autogram"
    try:
        diff, n = run_check(chk)
    finally:
        ENGINE["name"] = "jacobian"
    assert n > 0
    assert diff <= max(chk.tol, 1e-9), f"{chk.method}: max relative difference {diff:.3g} ({chk.reference})"


def test_autogram_engine_covers_every_gramian_aggregator():
    assert {c.method for c in AUTOGRAM_CHECKS} == {"mgda", "pcgrad", "cagrad", "imtl", "aligned_mtl", "nash_mtl",
                                                   "fairgrad", "upgrad", "dualproj", "gradvac"}


@pytest.mark.parametrize("name", ["mgda", "nash_mtl", "imtl"])
def test_heads_weighted_as_the_official_code(name):
    """heads="weights": head t gets w_t ∇L_t (Σ_t w_t L_t backward in the official MGDA / Nash-MTL / IMTL-G
    code); heads="own" (default): ∇L_t, as TorchJD."""
    cls = balancing.BALANCERS.get(name)
    if any(importlib.util.find_spec(m) is None for m in cls.requires):
        pytest.skip("solver missing")
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, dtype=D, generator=g)
    w0 = torch.randn(4, 3, dtype=D, generator=g)
    h0 = torch.randn(3, 4, dtype=D, generator=g)
    grads = {}
    for heads, split in itertools.product(("own", "weights"), (True, False)):  # with / without the features
        w_enc, h = torch.nn.Parameter(w0.clone()), torch.nn.Parameter(h0.clone())
        z = torch.tanh(x @ w_enc.T)
        losses = {f"t{i}": ((z @ h[i]) - i).pow(2).mean() for i in range(3)}
        own = torch.stack([torch.autograd.grad(loss, h, retain_graph=True)[0][i]
                           for i, loss in enumerate(losses.values())])
        opts = {"loss_scale": False} if name == "imtl" else {}
        bal = balancing.get(name, tasks=list(losses), heads=heads, **opts)
        info = bal.backward(losses, shared=[w_enc], features=[z] if split else None)
        w = weights_of(info)
        expected = own if heads == "own" else w[:, None] * own
        torch.testing.assert_close(h.grad, expected, rtol=1e-10, atol=1e-12)
        grads[heads, split] = w_enc.grad.clone()
    for key in grads:  # the shared update does not depend on the heads' weighting
        torch.testing.assert_close(grads[key], grads["own", True], rtol=1e-6, atol=1e-9)


def test_mgda_default_reaches_the_exact_min_norm_point_where_frank_wolfe_does_not():
    j, _ = problem("T5-conflict")
    w = kkt_simplex_min_norm(j @ j.T)
    exact = weights_of(run(build("mgda", 5), j)[1])
    fw = weights_of(run(build("mgda", 5, solver="frank_wolfe"), j)[1])
    assert float((exact - w).abs().max()) < 1e-12
    assert float((fw - w).abs().max()) > 1e-8  # TorchJD's default tolerance (1e-3) stops short


def test_graddrop_element_variant_is_torchjd_per_coordinate():
    """variant="element": P, U, M per coordinate of the raw feature Jacobian (TorchJD GradDrop)."""
    j, v = problem("T3-conflict")
    torch.manual_seed(1)
    d, _ = run(build("graddrop", 3, on="params", variant="element"), j, v)
    torch.manual_seed(1)
    p = 0.5 * (1 + j.sum(0) / j.abs().sum(0))
    u = torch.rand(p.shape, dtype=D)
    mask = (p > u) * (j > 0) + (p < u) * (j < 0)
    torch.testing.assert_close(d, (mask.to(D) * j).sum(0), rtol=1e-12, atol=1e-14)
    with pytest.raises(MtlkitError, match="on=features"):
        balancing.get("graddrop", tasks=["t0", "t1"], on="params")  # the paper's variant needs the batch axis


def test_dwa_without_setup_says_what_it_falls_back_to():
    bal = balancing.get("dwa", tasks=["t0", "t1"])
    with pytest.warns(RuntimeWarning, match="100 iterations"):
        run(bal, torch.eye(2, dtype=D))
    assert bal.window == 100
    fixed = balancing.get("dwa", tasks=["t0", "t1"], window=7)
    fixed.setup(epoch_iters=50)
    assert fixed.window == 7  # a fixed window stays fixed
