"""The imbalance study's Fig. 6: the feature distance between multi-task and single-task features, per task,
one bar group per task with one bar per method (or, from logs, one curve per method in a panel per task).

Input forms accepted by :func:`plot_feature_distance`:

- ``{method: {task: distance}}``: one bar per (task, method);
- ``{method: {task: [distance, ...]}}`` or a list of such dicts (the same method in several dicts, e.g.
  seeds): the bar is the mean, the error bar the standard deviation;
- ``{method: {task: [(iteration, distance), ...]}}`` (a probe's :meth:`~FeatureDistanceProbe.curves`, or
  :func:`load_feature_distance` of a run's log): curves over training, one panel per task.

Registered as an ``mtlkit analyze`` plot over several runs later (the analysis registry takes one run).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mtlkit.distill._probe import LOG_KEY
from mtlkit.errors import MtlkitError

MAX_POINTS = 2000  # a curve is averaged into at most this many bins

Runs = Mapping[str, Mapping[str, Any]] | Sequence[Mapping[str, Mapping[str, Any]]]


def load_feature_distance(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{task: [(iteration, distance), ...]}`` from ``run_dir/log.jsonl`` rows carrying ``"feature_distance"``
    (``{}`` when there are none). A resumed run logs an iteration twice: the last record wins."""
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return {}
    by_iter: dict[int, dict[str, float]] = {}
    with path.open() as f:
        for n, line in enumerate(f):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
            if isinstance(row, dict) and isinstance(row.get(LOG_KEY), dict):
                by_iter[int(row.get("iter", n))] = {t: float(v) for t, v in row[LOG_KEY].items()}
    out: dict[str, list[tuple[int, float]]] = {}
    for i in sorted(by_iter):
        for t, v in by_iter[i].items():
            out.setdefault(t, []).append((i, v))
    return out


def _binned(curve: list[tuple[float, float]], max_points: int = MAX_POINTS) -> list[tuple[float, float]]:
    """Average consecutive points so that at most ``max_points`` remain."""
    if len(curve) <= max_points:
        return curve
    n = len(curve)
    edges = [round(k * n / max_points) for k in range(max_points + 1)]
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        xs, ys = zip(*curve[a:b], strict=True)
        out.append((sum(xs) / len(xs), sum(ys) / len(ys)))
    return out


def _is_curve(v: Any) -> bool:
    return isinstance(v, Sequence) and not isinstance(v, str) and len(v) > 0 and all(
        isinstance(p, Sequence) and len(p) == 2 for p in v
    )


def _merge(runs: Runs) -> dict[str, dict[str, list[Any]]]:
    """``{method: {task: [values...]}}`` (a value is a float or a curve), methods and tasks in first-seen order."""
    items = [runs] if isinstance(runs, Mapping) else list(runs)
    merged: dict[str, dict[str, list[Any]]] = {}
    for run in items:
        if not isinstance(run, Mapping):
            raise MtlkitError(f"feature-distance runs must be {{method: {{task: distance}}}}, got {type(run).__name__}")
        for method, per_task in run.items():
            if not isinstance(per_task, Mapping):
                raise MtlkitError(f"method {method!r}: expected {{task: distance}}, got {type(per_task).__name__}")
            slot = merged.setdefault(str(method), {})
            for task, v in per_task.items():
                vals = slot.setdefault(str(task), [])
                if _is_curve(v):
                    vals.append([(float(i), float(d)) for i, d in v])
                elif isinstance(v, Sequence) and not isinstance(v, str):
                    vals.extend(float(x) for x in v)
                else:
                    vals.append(float(v))
    if not merged:
        raise MtlkitError("no feature distances to plot: give {method: {task: distance}} for at least one method")
    return merged


def plot_feature_distance(runs: Runs, path: str | Path, *, title: str | None = None) -> Path:
    """Draw Fig. 6 to ``path`` (PNG): bars per task and method, or curves when the values are
    ``[(iteration, distance), ...]``. Returns the path."""
    from matplotlib.figure import Figure

    merged = _merge(runs)
    methods = list(merged)
    tasks: list[str] = []
    for per_task in merged.values():
        tasks += [t for t in per_task if t not in tasks]
    curves = any(isinstance(v, list) for pt in merged.values() for vals in pt.values() for v in vals)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    colors = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    if curves:
        cols = min(len(tasks), 3)
        rows = -(-len(tasks) // cols)
        fig = Figure(figsize=(4.2 * cols, 2.9 * rows), layout="constrained")
        axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
        for k, task in enumerate(tasks):
            ax = axes[k // cols][k % cols]
            for m in methods:
                for j, curve in enumerate(v for v in merged[m].get(task, []) if isinstance(v, list)):
                    xs, ys = zip(*_binned(curve), strict=True)
                    ax.plot(xs, ys, color=colors[m], lw=1.1, alpha=0.9, label=m if j == 0 else None)
            ax.set_title(task, fontsize=9)
            ax.tick_params(labelsize=7)
        for k in range(len(tasks), rows * cols):
            axes[k // cols][k % cols].set_visible(False)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", fontsize=8, title="method")
        fig.supxlabel("iteration", fontsize=9)
        fig.supylabel("feature distance to single-task", fontsize=9)
    else:
        fig = Figure(figsize=(max(5.5, 1.6 + 0.5 * len(tasks) * max(len(methods), 2)), 3.4), layout="constrained")
        ax = fig.subplots()
        width = 0.8 / len(methods)
        for j, m in enumerate(methods):
            means, errs = [], []
            for task in tasks:
                vals = [v for v in merged[m].get(task, []) if not isinstance(v, list)]
                mean = sum(vals) / len(vals) if vals else math.nan
                std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
                means.append(mean)
                errs.append(std)
            xs = [i - 0.4 + width * (j + 0.5) for i in range(len(tasks))]
            ax.bar(xs, means, width, yerr=errs if any(errs) else None, color=colors[m], label=m, capsize=2)
        ax.set_xticks(range(len(tasks)), tasks)
        ax.set_ylabel("feature distance to single-task")
        ax.legend(fontsize=8, title="method")
    fig.suptitle(title or "Distance between multi-task and single-task features (lower: closer)", fontsize=10)
    fig.savefig(path, dpi=110)
    return path
