"""Gradient statistics: per-task gradient norms, pairwise conflicts, agreement with the combined update.

The figures of the imbalance paper (Figs. 7-16): pairwise cosine similarity and dot product of task
gradients, each task's gradient norm (w.r.t. the last shared layer), and the cosine between each task's
gradient and the aggregated update, plus the method's weights over time.

Recording: the strategy calls :meth:`GradStatsRecorder.begin` before the balancer's backward (every
``every`` steps; otherwise it returns None at no cost) and ``finish`` after it; the combined update is read
from the ``.grad`` the balancer filled. A user loop does the same::

    rec = GradStatsRecorder(every=10)
    pending = rec.begin(losses, model=model, features=feats, iteration=it)
    info = balancer.backward(losses, shared=model.shared_parameters(), features=feats)
    if pending is not None:
        info["grad_stats"] = pending.finish(info)

``mtlkit analyze RUN`` plots the ``grad_stats`` entries of ``log.jsonl`` (plot family ``grad_stats``) and
the per-step ``weights`` (plot family ``weights``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mtlkit.analysis._registry import PLOTTERS
from mtlkit.errors import MtlkitError


def gradient_statistics(jac: torch.Tensor, combined: torch.Tensor, tasks: Sequence[str]) -> dict[str, Any]:
    """Statistics of per-task gradients ``jac`` (T × n) and the combined update ``combined`` (n,)."""
    j = jac.detach().double()
    c = combined.detach().double().reshape(-1)
    norms = j.norm(dim=1)
    gram = j @ j.T
    denom = torch.outer(norms, norms)
    cos = torch.where(denom > 0, gram / denom.clamp_min(1e-300), torch.zeros_like(gram))
    cn = c.norm()
    to_update = j @ c
    cos_up = torch.where((norms > 0) & (cn > 0), to_update / (norms * cn).clamp_min(1e-300), torch.zeros_like(norms))
    pairs, dots = {}, {}
    for a in range(len(tasks)):
        for b in range(a + 1, len(tasks)):
            key = f"{tasks[a]}|{tasks[b]}"
            pairs[key] = float(cos[a, b])
            dots[key] = float(gram[a, b])
    return {
        "norms": {t: float(n) for t, n in zip(tasks, norms, strict=True)},
        "cos": pairs,
        "dot": dots,
        "cos_update": {t: float(v) for t, v in zip(tasks, cos_up, strict=True)},
        "update_norm": float(cn),
        "conflicts": sum(v < 0 for v in dots.values()),
    }


@dataclass
class PendingStats:
    """Per-task gradients of one step, waiting for the balancer to fill ``.grad`` (the combined update)."""

    tasks: list[str]
    params: list[torch.nn.Parameter]
    jac: torch.Tensor
    which: str

    def finish(self, info: dict[str, Any] | None = None) -> dict[str, Any]:
        combined = torch.cat([
            (p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1) for p in self.params
        ])
        stats = gradient_statistics(self.jac, combined, self.tasks)
        stats["params"] = self.which
        return stats


class GradStatsRecorder:
    """Records :func:`gradient_statistics` every ``every`` steps, with respect to the last shared layer
    (``params="last"``, the paper's choice for its gradient-norm figures) or all shared parameters."""

    def __init__(self, every: int = 1, params: str = "last", chunk_size: int | None = None) -> None:
        if int(every) < 1:
            raise MtlkitError(f"grad stats: every must be >= 1, got {every}")
        if params not in ("last", "all"):
            raise MtlkitError(f"grad stats: params must be 'last' or 'all', got {params!r}")
        self.every, self.params, self.chunk_size = int(every), params, chunk_size

    def due(self, iteration: int) -> bool:
        return iteration % self.every == 0

    def begin(
        self,
        losses: dict[str, torch.Tensor],
        model: Any = None,
        features: Any = None,
        iteration: int = 0,
        shared: Sequence[torch.nn.Parameter] | None = None,
    ) -> PendingStats | None:
        """Per-task gradients now (graph kept for the balancer), or None when this step is not recorded."""
        if not self.due(iteration):
            return None
        from mtlkit.balancing._grads import task_jacobian

        if self.params == "last" and model is not None:
            params = model.last_shared_parameters()
        elif shared is not None:
            params = list(shared)
        elif model is not None:
            params = model.shared_parameters()
        else:
            raise MtlkitError("grad stats: pass model=... or shared=... to GradStatsRecorder.begin")
        params = [p for p in params if p.requires_grad]
        tasks = list(losses)
        jac = task_jacobian(losses, params, features=features, chunk_size=self.chunk_size).detach()
        return PendingStats(tasks, params, jac, self.params)


# ------------------------------------------------------------------------------------------ plots
def _read_log(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "log.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a run killed mid-write leaves a partial last line
    return out


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc, q = [], 0.0, []
    for v in values:
        q.append(v)
        acc += v
        if len(q) > window:
            acc -= q.pop(0)
        out.append(acc / len(q))
    return out


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[int], dict[str, list[float]]]:
    """Iterations and name -> values of ``record[key]`` (a dict), skipping entries missing a value."""
    its: list[int] = []
    series: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        d = r.get(key)
        if not isinstance(d, dict):
            continue
        its.append(int(r["iter"]))
        for name, v in d.items():
            if isinstance(v, int | float):
                series.setdefault(name, []).append((int(r["iter"]), float(v)))
    return its, {k: v for k, v in series.items()}  # type: ignore[return-value]


def _line_plot(series: dict[str, list[tuple[int, float]]], title: str, ylabel: str, path: Path,
               log: bool = False, zero_line: bool = False) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    n = max(len(v) for v in series.values())
    window = max(1, n // 50)
    for name, pts in sorted(series.items()):
        x = [p[0] for p in pts]
        y = [p[1] for p in pts]
        line = ax.plot(x, _smooth(y, window), label=name.replace("|", " / "), linewidth=1.6)[0]
        if window > 1:
            ax.plot(x, y, color=line.get_color(), alpha=0.2, linewidth=0.6)
    if zero_line:
        ax.axhline(0.0, color="black", linewidth=0.6)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title + (f" (moving average over {window} records)" if window > 1 else ""), fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_grad_stats(run_dir: Path, out_dir: Path) -> list[Path]:
    """PNGs of the recorded gradient statistics: pairwise cosine and dot product, norms, cosine to update."""
    records = [{"iter": r["iter"], **r["grad_stats"]} for r in _read_log(run_dir) if isinstance(r.get("grad_stats"),
                                                                                                  dict)]
    if not records:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    which = records[-1].get("params", "last")
    layer = "last shared layer" if which == "last" else "shared parameters"
    written = []
    specs = [
        ("cos", "grad_pair_cosine.png", f"Pairwise cosine of task gradients ({layer})", "cosine", False, True),
        ("dot", "grad_pair_dot.png", f"Pairwise dot product of task gradients ({layer})", "dot product", False,
         True),
        ("norms", "grad_norms.png", f"Task gradient norms ({layer})", "||g_t||", True, False),
        ("cos_update", "grad_cos_update.png", f"Cosine of each task gradient with the update ({layer})", "cosine",
         False, True),
    ]
    for key, fname, title, ylabel, log, zero in specs:
        _, series = _series(records, key)
        series = {k: v for k, v in series.items() if v}
        if not series:
            continue
        positive = all(y > 0 for pts in series.values() for _, y in pts)
        written.append(_line_plot(series, title, ylabel, out_dir / fname, log=log and positive, zero_line=zero))
    return written


def plot_weights(run_dir: Path, out_dir: Path) -> list[Path]:
    """PNG of the method's loss weights over training (every logged step)."""
    records = [r for r in _read_log(run_dir) if isinstance(r.get("weights"), dict) and r["weights"]]
    if not records:
        return []
    _, series = _series(records, "weights")
    if not series:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    positive = all(y > 0 for pts in series.values() for _, y in pts)
    spread = max(y for pts in series.values() for _, y in pts) / max(
        min(y for pts in series.values() for _, y in pts), 1e-12)
    return [_line_plot(series, "Task weights", "weight", out_dir / "weights.png", log=positive and spread > 20)]


PLOTTERS.register("grad_stats", plot_grad_stats)
PLOTTERS.register("weights", plot_weights)
