"""The claims suite (``mtlkit bench --suite claims``): which of the seed papers' claims hold in mtlkit at CPU scale.

Each :class:`Claim` names where a paper makes it, the paper's effect, the runs it needs and how its effect is
measured from their ``metrics.json`` for one seed: two numbers ``(a, b)`` whose difference has the claim's sign.
Over seeds, :func:`verdict` decides: ``holds`` (same direction, |mean difference| > 2 × pooled std),
``reversed`` (opposite direction, same margin) or ``not resolved at this scale``; an equivalence claim ("AvgNorm
matches grid search") holds when the difference is within ``max(2 × pooled std, tolerance)``, else ``does not
hold``. The pooled std is sqrt((s_a² + s_b²) / 2) of the two sides over seeds (our reading of the issue's rule).

The suite never tunes itself toward a verdict: every run uses the same budget, and the table reports what
came out, with the command that made it. Runs are cached in the output directory (a finished run has its
``metrics.json``), so an interrupted suite continues where it stopped.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mtlkit.errors import MtlkitError

VERDICTS = ("holds", "reversed", "does not hold", "not resolved at this scale")


def pooled_std(a: Sequence[float], b: Sequence[float]) -> float:
    """sqrt((s_a² + s_b²) / 2), s the sample std over seeds (0 for a single value)."""
    sa = statistics.stdev(a) if len(a) > 1 else 0.0
    sb = statistics.stdev(b) if len(b) > 1 else 0.0
    return math.sqrt((sa * sa + sb * sb) / 2.0)


def verdict(a: Sequence[float], b: Sequence[float], sign: int = 1, tolerance: float | None = None) -> str:
    """The verdict on "a - b has sign ``sign``" (``sign`` +1 or -1), or with ``tolerance`` on "a ≈ b".

    Directional: ``holds`` when sign·(mean a - mean b) > 2·pooled std, ``reversed`` when it is < -2·pooled std,
    else ``not resolved at this scale``. Equivalence: ``holds`` when |mean a - mean b| <= max(2·pooled std,
    tolerance), else ``does not hold``. A side with fewer than two values (seeds) gives ``not resolved at this
    scale``: one seed has no spread to compare the difference with (our choice: never call a claim on one seed).
    """
    a = [float(x) for x in a if x is not None and math.isfinite(float(x))]
    b = [float(x) for x in b if x is not None and math.isfinite(float(x))]
    if sign not in (1, -1):
        raise MtlkitError(f"claim sign must be +1 or -1, got {sign!r}")
    if len(a) < 2 or len(b) < 2:
        return "not resolved at this scale"
    diff = statistics.mean(a) - statistics.mean(b)
    margin = 2.0 * pooled_std(a, b)
    if tolerance is not None:
        return "holds" if abs(diff) <= max(margin, tolerance) else "does not hold"
    if sign * diff > margin:
        return "holds"
    if sign * diff < -margin:
        return "reversed"
    return "not resolved at this scale"


# ---------------------------------------------------------------------------- what one seed's runs give
Results = dict[str, dict[str, Any]]  # run name -> metrics.json (plus "_baseline": the clean baselines JSON)


def _higher(tasks: Sequence[str]) -> dict[str, bool]:
    from mtlkit.tasks import make_task

    return {t: make_task(t).higher_is_better for t in tasks}


def per_task_gain(metrics: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float]:
    """M_t (%) of each task against the clean single-task baselines (test split)."""
    from mtlkit.metrics import relative_gain

    primary = metrics["primary"]
    higher = _higher(list(primary))
    return {t: relative_gain(primary[t], baseline["test"][t], higher[t]) for t in primary}


def dm(r: Results, name: str) -> float:
    """Δm (%) of run ``name`` against the clean baselines (also for runs on noisy or subsampled data)."""
    gains = per_task_gain(r[name], r["_baseline"])
    return sum(gains.values()) / len(gains)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def gain_spread(r: Results, name: str) -> float:
    """Imbalance of run ``name``: max_t M_t - min_t M_t (%), against the clean single-task baselines. The paper
    (§V.E, Tab. V) compares with single-task models trained on the same reduced data; the suite trains its
    baselines once, on all the data (our choice: it keeps the suite's cost), so this spread also holds the
    single-task loss of data."""
    gains = per_task_gain(r[name], r["_baseline"]).values()
    return max(gains) - min(gains)


def _norm_spread(metrics: dict[str, Any], last: bool) -> float:
    """Spread of the per-task gradient norms (log max/min over tasks), averaged over the last (or first) three
    recorded steps: the imbalance study's Fig. 8 quantity."""
    stats = metrics.get("_grad_norms") or []
    if not stats:
        return float("nan")
    rows = stats[-3:] if last else stats[:3]
    return _mean([math.log(max(n.values()) / max(min(n.values()), 1e-12)) for n in rows])


def _spearman(x: list[float], y: list[float]) -> float:
    from scipy.stats import spearmanr

    rho = spearmanr(x, y).statistic
    return float(rho) if rho == rho else 0.0


def grid_best(r: Results) -> str:
    """The grid point with the best validation Δm (the imbalance study's model selection)."""
    points = [n for n in r if n.startswith("grid-")]
    if not points:
        raise MtlkitError("no grid runs")
    return max(points, key=lambda n: r[n].get("val_delta_m") if r[n].get("val_delta_m") is not None else -1e9)


# ---------------------------------------------------------------------------- the claims
@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    where: str
    paper: str
    runs: tuple[str, ...]
    measure: Callable[[Results], tuple[float, float]]
    sign: int = 1
    tolerance: float | None = None
    unit: str = "Δm %"


OTHERS = ("equal", "uw", "avgnorm", "pcgrad", "cagrad", "nash_mtl")
GRID = ("grid-a", "grid-b", "grid-c", "grid-d")

CLAIMS: tuple[Claim, ...] = (
    Claim("uniform-loses", "uniform MTL loses to single-task on some task", "imbalance §V.A, Tab. II",
          "min_t M_t < 0 under uniform weights", ("equal",),
          lambda r: (min(per_task_gain(r["equal"], r["_baseline"]).values()), 0.0), sign=-1, unit="min M_t %"),
    Claim("grid-recovers", "grid-searched weights recover over uniform", "imbalance Tabs. VI-VII",
          "Δm(grid) > Δm(uniform)", ("equal", *GRID), lambda r: (dm(r, grid_best(r)), dm(r, "equal"))),
    Claim("avgnorm-grid", "AvgNorm matches grid search in Δm (within 1 point)", "imbalance Tabs. VI-VII",
          "AvgNorm ≈ grid", ("avgnorm", *GRID), lambda r: (dm(r, "avgnorm"), dm(r, grid_best(r))), tolerance=1.0),
    Claim("avgnorm-ranks", "AvgNorm's average weights rank the tasks as the grid's do", "imbalance Tabs. VI-VII",
          "Spearman ρ > 0", ("avgnorm", *GRID),
          lambda r: (_spearman(*_weights(r)), 0.0), unit="Spearman ρ"),
    Claim("mgda-rlw-worst", "MGDA and RLW are among the worst methods", "imbalance Tab. II",
          "Δm(others) > Δm(MGDA, RLW)", ("mgda", "rlw", *OTHERS),
          lambda r: (_mean([dm(r, m) for m in OTHERS]), _mean([dm(r, "mgda"), dm(r, "rlw")]))),
    Claim("noise-hurts", "label noise makes results worse", "imbalance §V.E",
          "Δm(noisy) < Δm(clean)", ("equal", "equal-noise"), lambda r: (dm(r, "equal-noise"), dm(r, "equal")),
          sign=-1),
    Claim("less-data-hurts", "less training data makes results worse", "imbalance §V.E",
          "Δm(25% data) < Δm(all)", ("equal", "equal-quarter"), lambda r: (dm(r, "equal-quarter"), dm(r, "equal")),
          sign=-1),
    Claim("less-data-imbalanced", "less training data makes MTL less balanced", "imbalance §V.E, Tab. V",
          "spread of M_t (25% data) > spread (all)", ("equal", "equal-quarter"),
          lambda r: (gain_spread(r, "equal-quarter"), gain_spread(r, "equal")), unit="max - min M_t %"),
    Claim("norms-diverge-uniform", "per-task gradient norms diverge under uniform weights", "imbalance Fig. 8",
          "spread(end) > spread(start)", ("equal",),
          lambda r: (_norm_spread(r["equal"], True), _norm_spread(r["equal"], False)), unit="log max/min norm"),
    Claim("norms-converge", "gradient norms stay closer under grid / CAGrad / Nash-MTL than uniform",
          "imbalance Fig. 8", "spread(uniform) > spread(grid, CAGrad, Nash-MTL)",
          ("equal", "cagrad", "nash_mtl", *GRID),
          lambda r: (_norm_spread(r["equal"], True),
                     _mean([_norm_spread(r[m], True) for m in ("cagrad", "nash_mtl", grid_best(r))])),
          unit="log max/min norm"),
    Claim("selective-beats-joint", "selective task-group updates beat joint updates", "selective Tab. 3",
          "Δm(selective) > Δm(joint)", ("equal", "selective"), lambda r: (dm(r, "selective"), dm(r, "equal"))),
    Claim("order-irrelevant", "the group update order does not matter (within 1 point)", "selective Tab. 4",
          "random ≈ backward order", ("selective", "selective-backward"),
          lambda r: (dm(r, "selective"), dm(r, "selective-backward")), tolerance=1.0),
    Claim("tmte-beats-tm", "TM + TE beats TM alone", "DTME Tab. 1", "Δm(TM+TE) > Δm(TM)", ("dtme", "dtme-tm"),
          lambda r: (dm(r, "dtme"), dm(r, "dtme-tm"))),
    Claim("tm-beats-mt", "TM beats the multi-task baseline", "DTME Tab. 1", "Δm(TM) > Δm(MT)", ("equal", "dtme-tm"),
          lambda r: (dm(r, "dtme-tm"), dm(r, "equal"))),
    Claim("te-beats-mt", "TE beats the multi-task baseline", "DTME Tab. 1", "Δm(TE) > Δm(MT)", ("equal", "dtme-te"),
          lambda r: (dm(r, "dtme-te"), dm(r, "equal"))),
    Claim("conflict-beats-random", "conflict-selected layers beat random ones", "DTME Tab. 2",
          "Δm(conflict) > Δm(random)", ("dtme", "dtme-random"), lambda r: (dm(r, "dtme"), dm(r, "dtme-random"))),
    Claim("random-beats-reverse", "random layers beat reverse-selected ones", "DTME Tab. 2",
          "Δm(random) > Δm(reverse)", ("dtme-random", "dtme-reverse"),
          lambda r: (dm(r, "dtme-random"), dm(r, "dtme-reverse"))),
    Claim("swap-worse", "swapping TM and TE layers is worse", "DTME Tab. 13", "Δm(conflict) > Δm(swap)",
          ("dtme", "dtme-swap"), lambda r: (dm(r, "dtme"), dm(r, "dtme-swap"))),
    Claim("early-better", "early expansion beats late expansion", "DTME Fig. 3", "Δm(early) > Δm(late)",
          ("dtme", "dtme-late"), lambda r: (dm(r, "dtme"), dm(r, "dtme-late"))),
    Claim("over-half-hurts", "expanding more than half the layers hurts", "DTME Fig. 6", "Δm(ρ=0.5) > Δm(ρ=0.83)",
          ("dtme", "dtme-rho83"), lambda r: (dm(r, "dtme"), dm(r, "dtme-rho83"))),
    Claim("recon-worse", "Recon is worse than joint training on a ViT", "DTME Tab. 7", "Δm(joint) > Δm(Recon)",
          ("equal", "recon"), lambda r: (dm(r, "equal"), dm(r, "recon"))),
)


def _weights(r: Results) -> tuple[list[float], list[float]]:
    """AvgNorm's average weights and the best grid point's weights, in one task order."""
    avg = (r["avgnorm"].get("method_report") or {}).get("average_weights") or {}
    best = r[grid_best(r)].get("_weights") or {}
    tasks = [t for t in best if t in avg]
    return [avg[t] for t in tasks], [best[t] for t in tasks]


# ---------------------------------------------------------------------------- the runs
@dataclass
class ClaimsScale:
    """The budget of every run (one for all, so no claim is tuned toward a verdict)."""

    name: str
    base: dict[str, Any]
    seeds: tuple[int, ...] = (0, 1, 2)
    dtme: dict[str, Any] = field(default_factory=dict)


SCALES: dict[str, ClaimsScale] = {
    # about an hour on 2 CPU cores: micro ViT from the shipped MAE checkpoint (issue #18: the claims start from
    # the pretrained backbone; --pretrained overrides), 32x32 synthetic NYUD, three tasks, 300 iterations
    "quick": ClaimsScale("quick", {"dataset": "synthetic-nyud", "tasks": ["semseg", "depth", "normals"],
                                   "image_size": 32, "batch_size": 8, "iters": 300, "eval_every": 0,
                                   "pretrained": "default"},
                         dtme={"iteration": 30, "calib_batches": 10, "measure_inference": False}),
    # the same budget on the PASCAL-Context twin (four of its tasks; the grid weights the second and third task,
    # the fourth keeps weight 1): the claims the papers also make on PASCAL-Context
    "quick-pascal": ClaimsScale("quick-pascal", {"dataset": "synthetic-pascal",
                                                 "tasks": ["semseg", "parts", "saliency", "normals"],
                                                 "image_size": 32, "batch_size": 8, "iters": 300, "eval_every": 0,
                                                 "pretrained": "default"},
                                dtme={"iteration": 30, "calib_batches": 10, "measure_inference": False}),
    # the tests' size: a few steps, to check the machinery (its verdicts mean nothing)
    "tiny": ClaimsScale("tiny", {"dataset": "synthetic-nyud", "tasks": ["semseg", "depth"], "image_size": 16,
                                 "batch_size": 4, "iters": 6, "eval_every": 0, "patch_size": 8,
                                 "dataset_options": {"num_train": 32, "num_val": 8, "num_test": 8}},
                        seeds=(0, 1), dtme={"iteration": 2, "calib_batches": 1, "measure_inference": False}),
}

#: grid points (weights of the tasks after the first, whose weight is 1); Adam makes one weight redundant
GRID_POINTS = {"grid-a": (0.5, 0.5), "grid-b": (0.5, 2.0), "grid-c": (2.0, 0.5), "grid-d": (2.0, 2.0)}


def run_overrides(name: str, tasks: Sequence[str], scale: ClaimsScale) -> dict[str, Any]:
    """Config overrides of one named run of the suite."""
    d = dict(scale.dtme)
    early, iters = int(d.get("iteration", 0)), int(scale.base.get("iters", 100))
    late = min(max(3 * early, early + 1), iters - 1)  # three times later, before the end
    table: dict[str, dict[str, Any]] = {
        "equal": {}, "uw": {"method": "uw"}, "avgnorm": {"method": "avgnorm"}, "pcgrad": {"method": "pcgrad"},
        "cagrad": {"method": "cagrad"}, "nash_mtl": {"method": "nash_mtl"}, "mgda": {"method": "mgda"},
        "rlw": {"method": "rlw"}, "selective": {"strategy": "selective"},
        "selective-backward": {"strategy": "selective", "strategy_options": {"order": "backward"}},
        "dtme": {"dtme": d}, "dtme-tm": {"dtme": {**d, "mode": "tm-only"}},
        "dtme-te": {"dtme": {**d, "mode": "te-only"}}, "dtme-random": {"dtme": {**d, "selection": "random"}},
        "dtme-reverse": {"dtme": {**d, "selection": "reverse"}}, "dtme-swap": {"dtme": {**d, "selection": "swap"}},
        "dtme-late": {"dtme": {**d, "iteration": late}}, "dtme-rho83": {"dtme": {**d, "rho": 0.83}},
        "recon": {"recon": {k: v for k, v in d.items() if k in ("iteration", "calib_batches", "measure_inference")}},
        "equal-noise": {"dataset_options": {"label_noise": _noise(tasks)}},
        "equal-quarter": {"dataset_options": {"train_fraction": 0.25}},
    }
    for g, ws in GRID_POINTS.items():
        table[g] = {"method": "fixed", "weights": {tasks[0]: 1.0, **dict(zip(tasks[1:], ws, strict=False))}}
    if name not in table:
        raise MtlkitError(f"unknown claims run {name!r}; runs: {', '.join(table)}")
    out = table[name]
    if "dataset_options" in out:  # on top of the scale's own options (split sizes)
        out = {**out, "dataset_options": {**scale.base.get("dataset_options", {}), **out["dataset_options"]}}
    if name in ("equal", "cagrad", "nash_mtl") or name.startswith("grid-"):
        out = {**out, "grad_stats_every": max(scale.base.get("iters", 100) // 10, 1)}
    return out


def _noise(tasks: Sequence[str]) -> dict[str, dict[str, float]]:
    """The noisy-data run: a fixed amount of label noise on every task (our choice of amounts)."""
    spec = {"semseg": {"fraction": 0.3}, "parts": {"fraction": 0.3}, "depth": {"std": 0.3},
            "normals": {"std": 0.3}, "edge": {"fraction": 0.1}, "saliency": {"fraction": 0.1}}
    return {t: spec[t] for t in tasks if t in spec}


def needed_runs(claims: Sequence[Claim]) -> list[str]:
    return list(dict.fromkeys(r for c in claims for r in c.runs))


def _grad_norms(run_dir: Path) -> list[dict[str, float]]:
    p = run_dir / "log.jsonl"
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text().splitlines():
        entry = json.loads(line)
        norms = (entry.get("grad_stats") or {}).get("norms")
        if norms:
            rows.append(norms)
    return rows


def run_claims(
    out: Path, scale: str = "quick", claims: Sequence[str] | None = None, base: dict[str, Any] | None = None,
    progress: bool = False, log: Callable[[str], None] = print, train: bool = True,
    seeds: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Train what the chosen claims need for every seed (cached), then write ``claims.json`` and ``claims.md``.

    ``train=False`` tabulates the runs already finished (an interrupted suite): a claim is measured on the
    seeds whose runs all exist. ``seeds`` restricts training and the table to some of the scale's seeds, so
    that the seeds can run in parallel processes on one output folder (then tabulate with ``train=False``)."""
    from mtlkit.engine._single_task import train_single_task_baselines
    from mtlkit.engine.config import Config
    from mtlkit.engine.trainer import Trainer

    if scale not in SCALES:
        raise MtlkitError(f"unknown claims scale {scale!r}; valid: {', '.join(SCALES)}")
    sc = SCALES[scale]
    chosen = list(CLAIMS) if not claims else [c for c in CLAIMS if c.id in set(claims)]
    unknown = set(claims or ()) - {c.id for c in CLAIMS}
    if unknown:
        raise MtlkitError(f"unknown claim(s) {', '.join(sorted(unknown))}; valid: {', '.join(c.id for c in CLAIMS)}")
    runs = needed_runs(chosen)
    tasks = list(sc.base["tasks"])
    out.mkdir(parents=True, exist_ok=True)
    per_seed: dict[int, Results] = {}
    if seeds is not None and not set(seeds) <= set(sc.seeds):
        raise MtlkitError(f"seeds {sorted(set(seeds) - set(sc.seeds))} are not in the {scale!r} scale's seeds "
                          f"{list(sc.seeds)}")
    for seed in sc.seeds if seeds is None else [s for s in sc.seeds if s in set(seeds)]:
        cfg = Config.from_dict({**sc.base, **(base or {}), "seed": seed, "progress": progress,
                                "baseline_cache": str(out / "baselines"), "out": str(out / "runs" / "unused")})
        if not train:
            from mtlkit.engine.baselines import find_baselines

            found = find_baselines(cfg, tasks)
            if found is None:
                continue
            bpath = found.path
        else:
            bpath = train_single_task_baselines(cfg, tasks)
        results: Results = {"_baseline": json.loads(Path(bpath).read_text())}
        for name in runs:
            run_dir = out / "runs" / f"{name}-seed{seed}"
            mfile = run_dir / "metrics.json"
            if not mfile.is_file() and not train:
                continue
            if not mfile.is_file():
                log(f"claims: training {name} (seed {seed})")
                Trainer.from_config(cfg.replace(out=str(run_dir), **run_overrides(name, tasks, sc))).fit()
            m = json.loads(mfile.read_text())
            m["_grad_norms"] = _grad_norms(run_dir)
            ov = run_overrides(name, tasks, sc)
            if "weights" in ov:
                m["_weights"] = ov["weights"]
            results[name] = m
        per_seed[seed] = results
    rows = []
    for c in chosen:
        a, b, errors = [], [], []
        for seed, r in per_seed.items():
            try:
                x, y = c.measure(r)
                a.append(x)
                b.append(y)
            except (KeyError, MtlkitError, ZeroDivisionError, ValueError) as e:
                errors.append(f"seed {seed}: {type(e).__name__}: {e}")
        rows.append({"id": c.id, "claim": c.text, "where": c.where, "paper": c.paper, "unit": c.unit,
                     "a": a, "b": b, "verdict": verdict(a, b, c.sign, c.tolerance), "errors": errors,
                     "tolerance": c.tolerance, "sign": c.sign})
    report = {"scale": scale, "setup": {**sc.base, **(base or {}), "seeds": sorted(per_seed), "dtme": sc.dtme},
              "claims": rows}
    (out / "claims.json").write_text(json.dumps(report, indent=2))
    (out / "claims.md").write_text(markdown(report))
    return report


def _ms(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def markdown(report: dict[str, Any]) -> str:
    """The table: claim, where, the paper's effect, ours (both sides, mean ± std over seeds), verdict."""
    lines = [
        "| claim | where | paper | ours: a | ours: b | a − b | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["claims"]:
        n = min(len(r["a"]), len(r["b"]))
        diffs = [x - y for x, y in zip(r["a"][:n], r["b"][:n], strict=True)]
        lines.append(f"| {r['claim']} | {r['where']} | {r['paper']} | {_ms(r['a'])} | {_ms(r['b'])} | "
                     f"{_ms(diffs)} ({r['unit']}) | {r['verdict']} |")
    return "\n".join(lines) + "\n"
