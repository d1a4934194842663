"""Plots over several runs (``mtlkit analyze RUN RUN ...``), and the imbalance study's Fig. 6 among them.

A multi-run plotter is ``fn(runs: list[Path], out_dir: Path) -> list[Path]`` registered in
:data:`MULTI_PLOTTERS`; it returns ``[]`` when the runs hold no data for it, so ``analyze`` runs them all.

``feature_distance`` (the study's §V.F.1, Fig. 6): the distance between each run's multi-task features and
the single-task features, per task, one bar per method (runs of the same method, e.g. seeds, give the mean
and the standard deviation), from ``metrics.json`` (``"feature_distance"``, written by runs trained with
``--feature-distance``); and the same distances over training, one curve per run, from ``log.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mtlkit._registry import Registry
from mtlkit.distill import LOG_KEY, load_feature_distance, plot_feature_distance

MultiPlotter = Callable[[list[Path], Path], list[Path]]
MULTI_PLOTTERS: Registry[MultiPlotter] = Registry("multi-run plot")


def run_label(metrics: dict[str, Any]) -> str:
    """A run's method as the study's tables name it: the balancer, ``+selective`` for the strategy, and
    ``url`` / ``url+<method>`` when the run distilled (``url`` alone is URL with equal weights)."""
    method = str(metrics.get("method") or "?")
    strategy = metrics.get("strategy")
    if strategy and strategy != "joint":
        method = f"{method}+{strategy}"
    if isinstance(metrics.get("distill"), dict):
        method = "url" if method == "equal" else f"url+{method}"
    return method


def _metrics(run: Path) -> dict[str, Any] | None:
    p = run / "metrics.json"
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return None


@MULTI_PLOTTERS.register("feature_distance")
def feature_distance_plot(runs: list[Path], out: Path) -> list[Path]:
    """Fig. 6 as bars (``feature_distance.png``) and curves over training (``feature_distance_curves.png``)."""
    bars: list[dict[str, dict[str, float]]] = []
    curves: list[dict[str, dict[str, Any]]] = []
    for run in runs:
        m = _metrics(run)
        if m is None or not isinstance(m.get(LOG_KEY), dict) or not m[LOG_KEY]:
            continue
        label = run_label(m)
        bars.append({label: {t: float(v) for t, v in m[LOG_KEY].items() if v is not None}})
        logged = load_feature_distance(run)
        if logged:
            curves.append({label: logged})
    written = []
    if bars:
        written.append(plot_feature_distance(bars, out / "feature_distance.png"))
    if curves:
        written.append(plot_feature_distance(curves, out / "feature_distance_curves.png",
                                             title="Feature distance to the single-task networks over training"))
    return written
