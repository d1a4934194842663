"""Plots of a selective-update run (paper Fig. 3 and D.3-D.5), read from the run's ``log.jsonl``.

The selective strategy logs, per iteration, ``"affinity"`` (T x T, rows = source task, columns = target),
``"groups"`` (the partition in update order), ``"grouped_by"`` (``"warmup"``, ``"affinity"``, ``"kept"``,
...) and, at the first iteration of a process, ``"affinity_tasks"`` (the matrix's task order). Three figures:

- ``affinity_pairs.png``: the proximal inter-task affinity of every (source, target) pair over time;
- ``grouping_frequency.png``: how often each pair of tasks shares a group (warm-up iterations excluded, since
  their singleton groups are forced), the paper's Fig. 3(a, b);
- ``num_groups.png``: the number of groups per iteration and its running mean, Fig. 3(c).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtlkit.analysis._registry import PLOTTERS

MAX_POINTS = 2000  # line plots average the log into at most this many bins


@dataclass
class SelectiveLog:
    tasks: list[str]
    iters: np.ndarray  # (N,)
    affinity: np.ndarray  # (N, T, T)
    groups: list[list[list[str]]]
    grouped_by: list[str]


def load_selective_log(run_dir: Path) -> SelectiveLog | None:
    """The selective strategy's records of ``run_dir/log.jsonl``; ``None`` when there are none.

    Resumed runs append to the log, so an iteration logged twice keeps its last record.
    """
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return None
    by_iter: dict[int, dict] = {}
    tasks: list[str] | None = None
    with path.open() as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
            if row.get("affinity_tasks"):
                tasks = list(row["affinity_tasks"])
            if "affinity" not in row or "groups" not in row:
                continue
            if tasks is None:
                tasks = list(row.get("losses") or {})
            by_iter[int(row.get("iter", len(by_iter)))] = row
    if not by_iter or not tasks:
        return None
    n = len(tasks)
    iters = sorted(i for i, r in by_iter.items() if np.shape(r["affinity"]) == (n, n))
    if not iters:
        return None
    rows = [by_iter[i] for i in iters]
    affinity = np.array([[[np.nan if v is None else v for v in r] for r in row["affinity"]] for row in rows], float)
    return SelectiveLog(
        tasks=tasks,
        iters=np.asarray(iters),
        affinity=affinity,
        groups=[row["groups"] for row in rows],
        grouped_by=[str(row.get("grouped_by", "")) for row in rows],
    )


def grouping_frequency(groups: list[list[list[str]]], tasks: list[str]) -> np.ndarray:
    """``F[i, j]``: the fraction of iterations in which tasks i and j were in the same group (diagonal 1)."""
    index = {t: i for i, t in enumerate(tasks)}
    counts = np.zeros((len(tasks), len(tasks)))
    for partition in groups:
        for group in partition:
            idx = [index[t] for t in group if t in index]
            counts[np.ix_(idx, idx)] += 1
    return counts / max(len(groups), 1)


def _binned(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Average consecutive points so at most ``max_points`` remain (along axis 0)."""
    if len(x) <= max_points:
        return x, y
    edges = np.linspace(0, len(x), max_points + 1).astype(int)
    xb = np.array([x[a:b].mean() for a, b in zip(edges[:-1], edges[1:], strict=True)])
    yb = np.stack([np.nanmean(y[a:b], axis=0) for a, b in zip(edges[:-1], edges[1:], strict=True)])
    return xb, yb


def _warmup_end(log: SelectiveLog) -> int | None:
    warm = [i for i, g in zip(log.iters.tolist(), log.grouped_by, strict=True) if g == "warmup"]
    return max(warm) if warm and len(warm) < len(log.iters) else None


def _plot_pairs(log: SelectiveLog, path: Path) -> Path:
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    n = len(log.tasks)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(4.2 * cols, 2.8 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=True)
    x, a = _binned(log.iters.astype(float), log.affinity)
    colors = [f"C{j % 10}" for j in range(n)]
    end = _warmup_end(log)
    for i, source in enumerate(log.tasks):
        ax = axes[i // cols][i % cols]
        for j in range(n):  # a target keeps its colour in every panel; the self affinity is dashed
            ax.plot(x, a[:, i, j], color=colors[j], lw=1.6 if i == j else 1.0, ls="--" if i == j else "-")
        ax.axhline(0.0, color="0.6", lw=0.6)
        if end is not None:
            ax.axvline(end, color="0.6", lw=0.6, ls=":")
        ax.set_title(f"from {source}", fontsize=9)
        ax.tick_params(labelsize=7)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    handles = [Line2D([], [], color=colors[j], lw=1.2) for j in range(n)]
    fig.legend(handles, log.tasks, loc="outside right upper", fontsize=8, title="target")
    fig.suptitle("Proximal inter-task affinity A[source, target] (dashed: self; dotted line: end of warm-up)")
    fig.supxlabel("iteration")
    fig.savefig(path, dpi=110)
    return path


def _plot_frequency(log: SelectiveLog, path: Path) -> Path:
    from matplotlib.figure import Figure

    keep = [g for g, by in zip(log.groups, log.grouped_by, strict=True) if by != "warmup"] or log.groups
    freq = grouping_frequency(keep, log.tasks)
    n = len(log.tasks)
    fig = Figure(figsize=(1.0 + 0.7 * n, 0.6 + 0.6 * n), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(freq, vmin=0.0, vmax=1.0, cmap="viridis")
    ax.set_xticks(range(n), log.tasks, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), log.tasks, fontsize=8)
    if n <= 12:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{freq[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="w" if freq[i, j] < 0.6 else "k")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title(f"Fraction of iterations grouped together\n({len(keep)} iterations after warm-up)", fontsize=9)
    fig.savefig(path, dpi=110)
    return path


def _plot_num_groups(log: SelectiveLog, path: Path) -> Path:
    from matplotlib.figure import Figure

    k = np.array([len(g) for g in log.groups], dtype=float)
    x = log.iters.astype(float)
    after = np.array([by != "warmup" for by in log.grouped_by])
    mean_after = float(k[after].mean()) if after.any() else float(k.mean())
    fig = Figure(figsize=(7, 3.2), layout="constrained")
    ax = fig.subplots()
    xb, kb = _binned(x, k)
    label = "per iteration" if len(k) <= MAX_POINTS else f"mean over bins of {len(k) / len(kb):.0f} it."
    ax.plot(xb, kb, color="C0", lw=0.8, alpha=0.6, drawstyle="steps-post", label=label)
    window = len(k) // 50
    if window > 1:
        running = np.convolve(k, np.ones(window) / window, mode="valid")
        xr, rb = _binned(x[window - 1 :], running)
        ax.plot(xr, rb, color="C1", lw=1.6, label=f"running mean ({window} it.)")
    end = _warmup_end(log)
    if end is not None:
        ax.axvline(end, color="0.6", lw=0.6, ls=":", label="end of warm-up")
    ax.set_ylim(0.5, len(log.tasks) + 0.5)
    ax.set_xlabel("iteration")
    ax.set_ylabel("number of groups K")
    ax.set_title(f"Task groups per batch (mean K after warm-up: {mean_after:.2f} of {len(log.tasks)} tasks)")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return path


@PLOTTERS.register("affinity")
def plot_affinity(run_dir: Path, out_dir: Path) -> list[Path]:
    """Affinity over time, grouping frequency and number of groups of a selective-update run ([] if none)."""
    log = load_selective_log(Path(run_dir))
    if log is None:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [
        _plot_pairs(log, out / "affinity_pairs.png"),
        _plot_frequency(log, out / "grouping_frequency.png"),
        _plot_num_groups(log, out / "num_groups.png"),
    ]
