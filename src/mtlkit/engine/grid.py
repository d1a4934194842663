"""Grid search over fixed loss weights, picked by validation Δm, beside AvgNorm's average weights.

The imbalance paper's baseline (Tabs. VI-VII): train the multi-task model for every point of a weight grid
(``fixed`` weights), keep the point with the best validation Δm, and compare its weights with the average
weights AvgNorm chose during one run. Both use the same budget and the same cached single-task baselines.
Grid parsing and points: :mod:`mtlkit.balancing._grid`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mtlkit.balancing._grid import average_logged_weights, grid_points, parse_grid
from mtlkit.errors import MtlkitError

__all__ = ["average_logged_weights", "grid_points", "grid_search", "parse_grid"]


def _name(point: dict[str, float]) -> str:
    return "w-" + "_".join(f"{t}{w:g}" for t, w in point.items())


def _fmt(x: Any, spec: str = ".4g") -> str:
    return "-" if x is None else format(x, spec)


def grid_search(
    base: Any,
    grid: dict[str, list[float]],
    out: str | Path,
    compare: list[str] | tuple[str, ...] = ("avgnorm",),
    progress: bool = False,
) -> dict[str, Any]:
    """Train every weight-grid point and the ``compare`` methods from ``base`` (a ``TrainConfig``).

    Picks the point with the best validation Δm (``val_delta_m``; single-task baselines are trained and
    cached first when missing) and writes ``grid.json`` and ``grid.md`` in ``out``: the chosen weights beside
    each compared method's average weights, with per-task test metrics and test Δm, as Tabs. VI-VII.
    """
    from mtlkit.data import build_dataset
    from mtlkit.engine._single_task import train_single_task_baselines
    from mtlkit.engine.trainer import Trainer

    out = Path(out)
    ds = build_dataset(base.dataset, "val", root=base.data_root, tasks=base.tasks, image_size=base.image_size,
                       **base.dataset_options)
    tasks = list(ds.task_names)
    points = grid_points(grid, tasks)
    if not points:
        raise MtlkitError("the weight grid is empty")
    for m in compare:
        from mtlkit.balancing import BALANCERS

        BALANCERS.get(m)
    out.mkdir(parents=True, exist_ok=True)
    train_single_task_baselines(base.replace(out=str(out / "single-task"), progress=progress), tasks)
    runs = []
    for point in points:
        cfg = base.replace(method="fixed", method_options={"weights": point}, weights=None, progress=progress,
                           out=str(out / "runs" / _name(point)))
        m = Trainer.from_config(cfg).fit()
        runs.append({"weights": point, "val_delta_m": m.get("val_delta_m"), "delta_m": m.get("delta_m"),
                     "primary": m["primary"], "run": cfg.out})
    scored = [r for r in runs if r["val_delta_m"] is not None]
    if not scored:
        raise MtlkitError("no validation Δm: the single-task baselines could not be found for this setting")
    best = max(scored, key=lambda r: r["val_delta_m"])
    compared = []
    for name in compare:
        cfg = base.replace(method=name, method_options={}, weights=None, progress=progress,
                           out=str(out / "runs" / name))
        m = Trainer.from_config(cfg).fit()
        compared.append({"method": name, "weights": average_logged_weights(cfg.out),
                         "val_delta_m": m.get("val_delta_m"), "delta_m": m.get("delta_m"), "primary": m["primary"],
                         "run": cfg.out})
    result = {"tasks": tasks, "grid": grid, "points": runs, "best": best, "compare": compared}
    result["markdown"] = _table(tasks, best, compared, runs)
    (out / "grid.json").write_text(json.dumps(result, indent=2))
    (out / "grid.md").write_text(result["markdown"])
    return result


def _table(tasks: list[str], best: dict[str, Any], compared: list[dict[str, Any]], runs: list[dict[str, Any]]) -> str:
    header = ["method"] + [c for t in tasks for c in (t, f"λ {t}")] + ["Δm (%)", "val Δm (%)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def row(label: str, r: dict[str, Any]) -> str:
        cells = [c for t in tasks for c in (_fmt(r["primary"].get(t)), _fmt(r["weights"].get(t), ".3g"))]
        return "| " + " | ".join([label, *cells, _fmt(r["delta_m"], "+.2f"), _fmt(r["val_delta_m"], "+.2f")]) + " |"

    lines.append(row("grid search (best val Δm)", best))
    for c in compared:
        lines.append(row(f"{c['method']} (average λ)", c))
    first = tasks[0]
    lines += ["", f"Weights relative to {first} (λ_t / λ_{first}):", ""]
    lines.append("| method | " + " | ".join(tasks) + " |")
    lines.append("|" + "---|" * (len(tasks) + 1))
    for label, w in [("grid search", best["weights"])] + [(c["method"], c["weights"]) for c in compared]:
        ref = w.get(first) or 1.0
        lines.append(f"| {label} | " + " | ".join(_fmt(w.get(t, 0.0) / ref, ".3g") for t in tasks) + " |")
    lines += ["", f"All {len(runs)} grid points:", "", "| weights | val Δm (%) | Δm (%) |", "|---|---|---|"]
    for r in sorted(runs, key=lambda r: -(r["val_delta_m"] if r["val_delta_m"] is not None else -math.inf)):
        w = ", ".join(f"{t}={v:g}" for t, v in r["weights"].items())
        lines.append(f"| {w} | {_fmt(r['val_delta_m'], '+.2f')} | {_fmt(r['delta_m'], '+.2f')} |")
    return "\n".join(lines) + "\n"
