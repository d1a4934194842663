"""The imbalance study's radar chart (its Fig. 4): per-task M_i of several runs against one reference.

M_i = (-1)^{l_i} (M_run,i - M_ref,i) / M_ref,i x 100 (l_i = 1 when lower is better): the per-task term of
Δm (:func:`mtlkit.metrics.relative_gain`), so the reference sits on the 0 ring and a polygon outside it is
better on that task. The study draws vanilla MTL, an architecture (MTAN / MTI-Net / InvPT) and both single-
task twins against the plain single-task networks; here every source is either a run directory (its
``metrics.json`` primary metrics) or a set of single-task baselines (a ``baselines.json`` or the folder
holding one, e.g. ``mtlkit train --arch mtan --single-task``'s twins). ``mtlkit analyze RUN RUN ...
--reference BASELINES`` writes ``radar.png`` and the numbers in ``radar.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtlkit.errors import MtlkitError
from mtlkit.metrics import relative_gain

RADAR_FILE = "radar.png"


def _task_params(run: Path) -> dict[str, dict[str, Any]]:
    spec = run / "model.json"
    if spec.is_file():
        build = json.loads(spec.read_text()).get("build", {})
        return dict(build.get("tasks", {}))
    return {}


def load_results(path: str | Path, split: str = "test") -> tuple[dict[str, float], list[Path]]:
    """(primary metric per task, run directories it came from) of a run directory or a baselines set."""
    p = Path(path)
    base = p if p.suffix == ".json" else p / "baselines.json"
    if base.is_file():
        data = json.loads(base.read_text())
        values = {t: v for t, v in data.get(split, {}).items() if v is not None}
        return values, [Path(r) for r in data.get("runs", {}).values()]
    metrics = p / "metrics.json"
    if metrics.is_file():
        data = json.loads(metrics.read_text())
        result = data.get("val") if split == "val" else data
        return dict((result or {}).get("primary", {})), [p]
    raise MtlkitError(f"{p}: neither a run directory (metrics.json) nor single-task baselines (baselines.json)")


def higher_is_better(task: str, runs: Sequence[Path]) -> bool:
    """From the task as a run built it (``model.json``), else the task registry's default."""
    from mtlkit.tasks import make_task

    for run in runs:
        params = _task_params(run)
        if task in params:
            return bool(make_task(task, **params[task]).higher_is_better)
    return bool(make_task(task).higher_is_better)


def radar_values(
    sources: Sequence[str | Path], reference: str | Path, labels: Sequence[str] | None = None, split: str = "test"
) -> dict[str, Any]:
    """``{"tasks": [...], "reference": str, "series": {label: {task: M_i}}}`` over the tasks every source
    and the reference share."""
    if not sources:
        raise MtlkitError("the radar chart needs at least one run besides --reference")
    if labels is not None and len(labels) != len(sources):
        raise MtlkitError(f"--labels gives {len(labels)} names for {len(sources)} runs; give one per run")
    ref, ref_runs = load_results(reference, split)
    loaded = [load_results(s, split) for s in sources]
    tasks = [t for t in ref if all(t in v for v, _ in loaded)]
    if len(tasks) < 3:
        raise MtlkitError(f"a radar chart needs at least 3 tasks shared by every run and the reference; got {tasks}")
    names = list(labels) if labels is not None else [_label(Path(s)) for s in sources]
    if len(set(names)) != len(names):
        raise MtlkitError(f"runs {names} share a name; give --labels")
    series: dict[str, dict[str, float]] = {}
    for name, (vals, runs) in zip(names, loaded, strict=True):
        series[name] = {
            t: relative_gain(float(vals[t]), float(ref[t]), higher_is_better(t, [*runs, *ref_runs])) for t in tasks
        }
    return {"tasks": tasks, "reference": str(reference), "split": split, "series": series}


def _label(p: Path) -> str:
    return p.parent.name if p.suffix == ".json" else p.name


def plot_radar(values: dict[str, Any], path: str | Path) -> Path:
    """Draw :func:`radar_values`' result as a PNG (one closed polygon per series, the reference's 0 ring)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = values["tasks"]
    n = len(tasks)
    angles = [2 * math.pi * i / n for i in range(n)] + [0.0]
    every = [v for s in values["series"].values() for v in s.values()]
    lo, hi = min(0.0, *every), max(0.0, *every)
    pad = max(1.0, 0.1 * (hi - lo))
    fig = plt.figure(figsize=(5.5, 5.5))
    ax = fig.add_subplot(projection="polar")
    ax.set_ylim(lo - pad, hi + pad)
    ax.plot(angles, [0.0] * (n + 1), color="black", lw=1, ls="--", label="reference (0)")
    for name, s in values["series"].items():
        r = [s[t] for t in tasks] + [s[tasks[0]]]
        ax.plot(angles, r, lw=1.8, label=name)
        ax.fill(angles, r, alpha=0.1)
    ax.set_xticks(angles[:-1])
    ax.set_xticklabels(tasks)
    ax.set_title("per-task M_i (%) vs " + Path(values["reference"]).name, fontsize=10)
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.12), fontsize=8)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def radar_chart(
    sources: Sequence[str | Path],
    reference: str | Path,
    out_dir: str | Path,
    labels: Sequence[str] | None = None,
    split: str = "test",
) -> list[Path]:
    """``radar.png`` and ``radar.json`` in ``out_dir``; returns their paths."""
    values = radar_values(sources, reference, labels, split)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_radar(values, out / RADAR_FILE)
    js = out / "radar.json"
    js.write_text(json.dumps(values, indent=2))
    return [png, js]
