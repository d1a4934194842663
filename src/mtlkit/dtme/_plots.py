"""Plots of a run's token-space analysis (``mtlkit analyze RUN --only tokens``) and Recon conflicts.

``tokens``: per-layer bars of range vs null-space conflict rates (TM / TE layers marked), the eigenvalue
spectrum of every layer with the range / null split marked, and the per-pair conflict matrices; with an
end-of-training analysis (``--dtme final_analysis=true``) also the rates per space at the start and the
end of training (the paper's Tab. 14).
``recon``: per-layer parameter-gradient conflict rates with the layers made task-specific.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mtlkit.analysis import PLOTTERS
from mtlkit.dtme._recon import RECON_FILE, ParameterConflicts
from mtlkit.dtme._result import ANALYSIS_FILE, END_ANALYSIS_FILE, TokenSpaceAnalysis


def Figure(**kwargs):  # noqa: N802  (matplotlib is imported only when a plot is drawn)
    from matplotlib.figure import Figure as _Figure

    return _Figure(**kwargs)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def conflict_bars_figure(a: TokenSpaceAnalysis):
    """Per-layer range / null conflict rates; the TM layers' range bars and the TE layers' null bars are
    hatched and labelled."""
    n = len(a.layers)
    x = np.arange(n)
    tm, te = set(a.expansion.get("tm_layers", [])), set(a.expansion.get("te_layers", []))
    fig = Figure(figsize=(max(5.0, 0.6 * n + 2), 3.6))
    ax = fig.add_subplot()
    rb = ax.bar(x - 0.2, a.range_rates(), 0.4, label="range space", color="tab:blue")
    nb = ax.bar(x + 0.2, a.null_rates(), 0.4, label="null space", color="tab:orange")
    top = max([*a.range_rates(), *a.null_rates(), 1e-9])
    for bars, chosen, tag in ((rb, tm, "TM"), (nb, te, "TE")):
        for i, bar in enumerate(bars):
            if i in chosen:
                bar.set_hatch("///")
                bar.set_edgecolor("black")
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.02 * top, tag, ha="center",
                        fontsize=7)
    ax.set_xticks(x, [str(i) for i in x])
    ax.set_xlabel("layer l (output tokens of block l)")
    ax.set_ylabel("share of conflicting (token, pair)")
    where = "per task stream" if a.streams else "shared stream"
    ax.set_title(f"Token-space gradient conflicts (r = {a.r:g}, {where})")
    ax.set_ylim(0, 1.3 * top)
    ax.legend(fontsize=8, ncol=2, loc="upper right")
    return fig


def plot_conflict_bars(a: TokenSpaceAnalysis, path: Path) -> Path:
    return _save(conflict_bars_figure(a), path)


def conflict_change_figure(start: TokenSpaceAnalysis, end: TokenSpaceAnalysis):
    """Per layer and space, the conflict rate at the start (expansion) and the end of training."""
    n = len(start.layers)
    x = np.arange(n)
    tm, te = set(start.expansion.get("tm_layers", [])), set(start.expansion.get("te_layers", []))
    fig = Figure(figsize=(max(6.0, 0.9 * n + 2), 3.8))
    ax = fig.add_subplot()
    w = 0.2
    series = (
        (-1.5, start.range_rates(), "range, start", "tab:blue", None),
        (-0.5, end.range_rates(), "range, end", "tab:blue", "..."),
        (0.5, start.null_rates(), "null, start", "tab:orange", None),
        (1.5, end.null_rates(), "null, end", "tab:orange", "..."),
    )
    for off, rates, label, color, hatch in series:
        ax.bar(x + off * w, rates, w, label=label, color=color, alpha=0.55 if hatch else 1.0, hatch=hatch)
    labels = [f"{i}\n{'TM' if i in tm else ''}{'+' if i in tm and i in te else ''}{'TE' if i in te else ''}"
              for i in x]
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_xlabel("layer l (modules chosen at the expansion)")
    ax.set_ylabel("share of conflicting (token, pair)")
    ax.set_title("Token-space conflicts at the expansion and at the end of training (paper Tab. 14)")
    ax.legend(fontsize=7, ncol=4, loc="upper right")
    top = max([*start.range_rates(), *start.null_rates(), *end.range_rates(), *end.null_rates(), 1e-9])
    ax.set_ylim(0, 1.35 * top)
    return fig


def plot_spectra(a: TokenSpaceAnalysis, path: Path) -> Path:
    n = len(a.layers)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.2 * cols, 2.6 * rows))
    for i, layer in enumerate(a.layers):
        ax = fig.add_subplot(rows, cols, i + 1)
        lam = np.asarray(layer.eigenvalues, dtype=float)
        if lam.size:
            idx = np.arange(1, lam.size + 1)
            ax.semilogy(idx, np.clip(lam, max(lam.max(), 1e-30) * 1e-12, None), lw=1)
            ax.axvline(layer.k + 0.5, color="tab:red", lw=1, ls="--")
        ax.set_title(f"layer {layer.layer}: k = {layer.k}/{layer.dim} ({100 * layer.variance_captured:.1f}%)",
                     fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("Eigenvalues of the token covariance (dashed: range | null split)", fontsize=9)
    return _save(fig, path)


def plot_pair_matrices(a: TokenSpaceAnalysis, path: Path) -> Path:
    n, t = len(a.layers), len(a.tasks)
    cols = min(n, 6)
    blocks = math.ceil(n / cols)
    fig = Figure(figsize=(2.2 * cols + 1, 2.3 * 2 * blocks))
    vmax = max(1e-9, *(max(max(r) for r in m) for layer in a.layers for m in (layer.range_pairs, layer.null_pairs)))
    im = None
    for i, layer in enumerate(a.layers):
        b, c = divmod(i, cols)
        for s, (name, mat) in enumerate((("range", layer.range_pairs), ("null", layer.null_pairs))):
            ax = fig.add_subplot(2 * blocks, cols, (2 * b + s) * cols + c + 1)
            m = np.asarray(mat, dtype=float)
            np.fill_diagonal(m, np.nan)  # a task does not conflict with itself: left blank
            im = ax.imshow(m, vmin=0, vmax=vmax, cmap="viridis")
            ax.set_title(f"L{layer.layer} {name}", fontsize=8)
            ax.set_xticks(range(t), a.tasks, rotation=90, fontsize=6)
            ax.set_yticks(range(t), a.tasks if c == 0 else [""] * t, fontsize=6)
    if im is not None:
        fig.colorbar(im, ax=fig.axes, shrink=0.6, label="conflict rate")
    fig.suptitle("Per-pair token-space conflict rates", fontsize=9)
    fig.savefig(path, dpi=110)
    return path


@PLOTTERS.register("tokens")
def plot_token_space(run_dir: Path, out_dir: Path) -> list[Path]:
    """All token-space plots of a run (none when the run has no ``token_space.json``)."""
    src = Path(run_dir) / ANALYSIS_FILE
    if not src.is_file():
        return []
    a = TokenSpaceAnalysis.load(src)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [
        plot_conflict_bars(a, out / "token_conflicts.png"),
        plot_spectra(a, out / "token_spectrum.png"),
        plot_pair_matrices(a, out / "token_pair_conflicts.png"),
    ]
    end_src = Path(run_dir) / END_ANALYSIS_FILE
    if end_src.is_file():
        end = TokenSpaceAnalysis.load(end_src)
        files.append(_save(conflict_change_figure(a, end), out / "token_conflict_change.png"))
    return files


@PLOTTERS.register("recon")
def plot_recon(run_dir: Path, out_dir: Path) -> list[Path]:
    """Per-layer parameter-gradient conflict rates of a Recon run (none without ``recon_conflicts.json``)."""
    src = Path(run_dir) / RECON_FILE
    if not src.is_file():
        return []
    c = ParameterConflicts.load(src)
    n = len(c.rates)
    fig = Figure(figsize=(max(5.0, 0.5 * n + 2), 3.4))
    ax = fig.add_subplot()
    colors = ["tab:red" if i in c.layers else "tab:gray" for i in range(n)]
    ax.bar(np.arange(n), c.rates, color=colors)
    ax.set_xticks(np.arange(n), [str(i) for i in range(n)])
    ax.set_xlabel("layer (block)")
    ax.set_ylabel(f"share of pairs with cos < {c.threshold:g}")
    ax.set_title("Parameter-gradient conflicts (red: made task-specific)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [_save(fig, out / "recon_conflicts.png")]
