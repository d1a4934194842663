"""Reference-parity table: every balancing method against its official formula (the parity tests' checks).

Runs the checks of ``tests/balancing/test_reference_parity.py`` (the same problems, references and
tolerances) and writes ``benchmarks/results/parity.md`` and ``parity.json``: per method the reference, the
largest relative difference ||ours - ref||_∞ / ||ref||_∞ over every compared update and weight vector,
the tolerance the test asserts and how many vectors were compared. For the solver methods whose
official code uses a looser solver than ours, the official solver's own distance from the same reference
is measured too (``official solver`` column).

    PYTHONPATH=src python benchmarks/parity.py
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.balancing import test_reference_parity as parity  # noqa: E402


def official_cagrad_gap() -> float:
    """The official CAGrad solver (scipy SLSQP, default tolerance, its 1e-8 guards; Cranial-XIX/CAGrad
    ``nyuv2/utils.py`` L377-400) against the tight reference."""
    from scipy.optimize import minimize

    pairs = []
    for name in parity.PROBLEMS:
        j, _ = parity.problem(name)
        t = j.shape[0]
        gg = (j @ j.T).numpy()
        b = np.full(t, 1.0 / t)
        c = 0.4 * math.sqrt(gg.mean() + 1e-8) + 1e-8

        def objfn(x, gg=gg, b=b, c=c):
            return x @ gg @ b + c * np.sqrt(x @ gg @ x + 1e-8)

        res = minimize(objfn, b, bounds=[(0, 1)] * t, constraints=({"type": "eq", "fun": lambda x: 1 - sum(x)},))
        gw = torch.tensor(res.x) @ j
        d = t * (j.mean(0) + c / (gw.norm() + 1e-8) * gw) / (1 + 0.4**2)
        pairs.append((d, parity.ref_cagrad(j)))
    return parity.rel_diff(pairs)


def official_fairgrad_gap() -> float:
    """The official FairGrad solver (scipy ``least_squares`` from 1/T, default tolerances; OptMN-Lab/fairgrad
    ``methods/weight_methods.py`` L811-826, x T L845, clip L870-871) against the Newton reference, on the
    same weights and updates as the check."""
    from scipy.optimize import least_squares

    pairs = []
    for name in parity.PROBLEMS:
        j, _ = parity.problem(name)
        t = j.shape[0]
        gg = (j @ j.T).numpy()
        for alpha in (1.0, 2.0):
            x0 = np.full(t, 1.0 / t)
            res = least_squares(lambda x, a=alpha, gg=gg: gg @ x - np.power(1 / x, 1 / a), x0, bounds=(0, np.inf))
            w, ref = torch.tensor(res.x), parity.ref_fairgrad_w(j, alpha)
            pairs += [(t * w, t * ref), (parity.clip(t * (w @ j), 1.0), parity.clip(t * (ref @ j), 1.0)),
                      (w, ref), (w @ j, ref @ j)]
    return parity.rel_diff(pairs)


def sener_koltun_min_norm(g: np.ndarray) -> np.ndarray:
    """Sener & Koltun's ``MinNormSolver.find_min_norm_element`` (isl-org/MultiObjectiveOptimization
    ``multi_task/min_norm_solvers.py`` L5-136), rewritten from its description on the Gramian: best pair
    (with its 0.999 / 0.001 clamps), then projected gradient steps with an exact line search until the
    weights move less than 1e-5 (at most 250 steps)."""

    def from2(v11, v12, v22):
        if v12 >= v11:
            return 0.999, v11
        if v12 >= v22:
            return 0.001, v22
        gamma = -(v12 - v22) / (v11 + v22 - 2 * v12)
        return gamma, v22 + gamma * (v12 - v22)

    def project_simplex(y):
        m = len(y)
        s = np.sort(y)[::-1]
        tmax_f = (y.sum() - 1.0) / m
        tmp = 0.0
        for i in range(m - 1):
            tmp += s[i]
            tmax = (tmp - 1) / (i + 1.0)
            if tmax > s[i + 1]:
                tmax_f = tmax
                break
        return np.maximum(y - tmax_f, 0.0)

    def next_point(cur, grad, n):
        proj = grad - grad.sum() / n
        tm1 = -cur[proj < 0] / proj[proj < 0]
        tm2 = (1.0 - cur[proj > 0]) / proj[proj > 0]
        t = 1.0
        if (tm1 > 1e-7).any():
            t = tm1[tm1 > 1e-7].min()
        if (tm2 > 1e-7).any():
            t = min(t, tm2[tm2 > 1e-7].min())
        return project_simplex(proj * t + cur)

    n = g.shape[0]
    best = None
    for i in range(n):
        for j in range(i + 1, n):
            c, d = from2(g[i, i], g[i, j], g[j, j])
            if best is None or d < best[3]:
                best = (i, j, c, d)
    sol = np.zeros(n)
    sol[best[0]], sol[best[1]] = best[2], 1 - best[2]
    if n < 3:
        return sol
    for _ in range(250):
        new = next_point(sol, -g @ sol, n)
        nc, _ = from2(sol @ g @ sol, sol @ g @ new, new @ g @ new)
        new_sol = nc * sol + (1 - nc) * new
        if np.abs(new_sol - sol).sum() < 1e-5:
            return sol
        sol = new_sol
    return sol


def official_mgda_gap() -> float:
    """Sener & Koltun's solver against the exact min-norm point, on the weights and the update."""
    pairs = []
    for name in parity.PROBLEMS:
        j, _ = parity.problem(name)
        g = j @ j.T
        w = torch.tensor(sener_koltun_min_norm(g.numpy()))
        ref = parity.kkt_simplex_min_norm(g)
        pairs += [(w, ref), (w @ j, ref @ j)]
    return parity.rel_diff(pairs)


OFFICIAL_GAPS = {"cagrad": official_cagrad_gap, "fairgrad": official_fairgrad_gap, "mgda": official_mgda_gap}


def main() -> None:
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for chk in parity.CHECKS:
            t0 = time.perf_counter()
            try:
                diff, n = parity.run_check(chk)
            except (Exception, pytest.skip.Exception) as e:  # a missing optional solver: report it, go on
                rows.append({"method": chk.method, "reference": chk.reference, "error": f"{type(e).__name__}: {e}"})
                continue
            row = {"method": chk.method, "reference": chk.reference, "max_rel_diff": diff, "tol": chk.tol,
                   "compared": n, "ok": diff <= chk.tol, "seconds": time.perf_counter() - t0}
            if chk.method in OFFICIAL_GAPS:
                row["official_solver_rel_diff"] = OFFICIAL_GAPS[chk.method]()
            rows.append(row)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "parity.json").write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=2))
    lines = [
        "# Reference parity of the balancing methods",
        "",
        "Written by `PYTHONPATH=src python benchmarks/parity.py` from the checks of",
        "`tests/balancing/test_reference_parity.py` (which assert the same tolerances). Problems: float64,",
        "T = 3 and T = 5 tasks, conflicting and non-conflicting gradients, several steps for stateful methods.",
        "Max relative difference: max over every compared update / weight vector of",
        "||ours - reference||_∞ / ||reference||_∞. *official solver*: the official code's own solver against the",
        "same reference, where it is looser than ours.",
        "",
        "| method | reference (independent re-implementation of) | max relative difference | tolerance | "
        "official solver | vectors |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| `{r['method']}` | {r['reference']} | not run: {r['error']} | | | |")
            continue
        gap = r.get("official_solver_rel_diff")
        lines.append(f"| `{r['method']}` | {r['reference']} | {r['max_rel_diff']:.1e} | {r['tol']:.0e} | "
                     f"{'-' if gap is None else format(gap, '.1e')} | {r['compared']} |")
    (out / "parity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    bad = [r["method"] for r in rows if not r.get("ok", False)]
    if bad:
        print(f"\nabove tolerance or not run: {', '.join(bad)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
