"""The token-space analysis result: per layer split, variance, conflict rates and matrices, plus timings (JSON)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mtlkit.errors import MtlkitError

#: file name of the analysis inside a run directory (read by the ``tokens`` plotter)
ANALYSIS_FILE = "token_space.json"
#: the analysis of the expanded model at the end of training (``--dtme final_analysis=true``)
END_ANALYSIS_FILE = "token_space_end.json"


@dataclass
class LayerTokenSpace:
    """One transformer block's token space and its gradient conflicts."""

    layer: int
    dim: int
    #: number of range-space dimensions (the split index)
    k: int
    #: share of the total variance in the range space
    variance_captured: float
    #: share of conflicting (token, pair) in the range / null space, averaged over batches
    range_rate: float
    null_rate: float
    #: T×T per-pair conflict rates (symmetric, zero diagonal), task order as ``TokenSpaceAnalysis.tasks``
    range_pairs: list[list[float]]
    null_pairs: list[list[float]]
    #: eigenvalues of the uncentred covariance, descending
    eigenvalues: list[float]


@dataclass
class TokenSpaceAnalysis:
    """What :func:`analyze_token_space` measured; ``timings`` in seconds (the paper's Tab. 6)."""

    tasks: list[str]
    r: float
    layers: list[LayerTokenSpace]
    #: batches (and tokens per layer) in the covariance and in the conflict measurement
    covariance_batches: int = 0
    covariance_tokens: int = 0
    conflict_batches: int = 0
    #: batches skipped for non-finite tokens (covariance) or a non-finite loss (conflicts)
    skipped_batches: int = 0
    #: ``covariance_s`` (forward passes + streaming sums), ``eigen_s`` (eigendecompositions and splits),
    #: ``conflicts_s`` (forward, one backward per task, projections, counting)
    timings: dict[str, float] = field(default_factory=dict)
    #: what was done with it: ``{"tm_layers": [...], "te_layers": [...], ...}`` (empty for a plain analysis)
    expansion: dict[str, Any] = field(default_factory=dict)
    #: task streams of an expanded model that was analysed (None: one shared stream, an unexpanded model)
    streams: list[str] | None = None

    def range_rates(self) -> list[float]:
        return [layer.range_rate for layer in self.layers]

    def null_rates(self) -> list[float]:
        return [layer.null_rate for layer in self.layers]

    def to_dict(self, eigenvalues: bool = True) -> dict[str, Any]:
        d = asdict(self)
        if not eigenvalues:
            for layer in d["layers"]:
                layer.pop("eigenvalues")
        return d

    def summary(self) -> dict[str, Any]:
        """The compact per-layer view for ``metrics.json`` (no matrices or spectra); timings in seconds."""
        return {
            "r": self.r,
            "dim": self.layers[0].dim if self.layers else 0,
            "k": [layer.k for layer in self.layers],
            "variance_captured": [round(layer.variance_captured, 6) for layer in self.layers],
            "range_conflict_rate": [round(v, 6) for v in self.range_rates()],
            "null_conflict_rate": [round(v, 6) for v in self.null_rates()],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "streams": self.streams,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TokenSpaceAnalysis:
        layers = [LayerTokenSpace(**{"eigenvalues": [], **layer}) for layer in d["layers"]]
        return cls(**{**d, "layers": layers})

    def save(self, path: str | Path) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_dict(), indent=1))
        return p

    @classmethod
    def load(cls, path: str | Path) -> TokenSpaceAnalysis:
        p = Path(path)
        if not p.is_file():
            raise MtlkitError(f"no token-space analysis at {p}; run `mtlkit train --dtme` or analyze_token_space")
        return cls.from_dict(json.loads(p.read_text()))


def conflict_change(start: TokenSpaceAnalysis, end: TokenSpaceAnalysis) -> dict[str, Any]:
    """Conflict rates per space at the start and the end of training and their reduction (start − end),
    averaged over all layers, the TM layers and the TE layers (from ``start.expansion``).

    The paper's Tab. 14 reports the reduction of the number of conflicts per space for TM and for TE;
    we report rates (shares of conflicting (token, pair)), which do not depend on the calibration size.
    """
    if len(start.layers) != len(end.layers):
        raise MtlkitError(f"analyses of {len(start.layers)} and {len(end.layers)} layers cannot be compared")
    groups = {
        "all": list(range(len(start.layers))),
        "tm_layers": list(start.expansion.get("tm_layers", [])),
        "te_layers": list(start.expansion.get("te_layers", [])),
    }
    out: dict[str, Any] = {}
    for name, layers in groups.items():
        if not layers:
            continue
        out[name] = {"layers": layers}
        for space, a, b in (("range", start.range_rates(), end.range_rates()),
                            ("null", start.null_rates(), end.null_rates())):
            s0 = sum(a[i] for i in layers) / len(layers)
            s1 = sum(b[i] for i in layers) / len(layers)
            out[name][space] = {"start": round(s0, 6), "end": round(s1, 6), "reduction": round(s0 - s1, 6)}
    return out


def _fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s ({seconds / 60:.2f} min)"


def expansion_table(analysis: TokenSpaceAnalysis, report: dict[str, Any]) -> str:
    """What ``mtlkit train --dtme`` prints at the expansion: per layer k (range dimension), the range and
    null conflict rates and the modules chosen; the expanded share, parameter overhead, the calibration
    time split as the paper's Tab. 6 (covariance, eigendecomposition, conflicts) and the inference cost."""
    tm, te = set(report.get("tm_layers", [])), set(report.get("te_layers", []))
    lines = [
        f"DTME token space (r = {analysis.r:g}, tasks: {', '.join(analysis.tasks)}; layer l = output of block l)",
        "| layer | k / D | variance in range | range conflict | null conflict | TM | TE |",
        "|---|---|---|---|---|---|---|",
    ]
    for layer in analysis.layers:
        lines.append(
            f"| {layer.layer} | {layer.k} / {layer.dim} | {100 * layer.variance_captured:.2f}% | "
            f"{layer.range_rate:.4f} | {layer.null_rate:.4f} | {'TM' if layer.layer in tm else ''} | "
            f"{'TE' if layer.layer in te else ''} |"
        )
    depth = len(analysis.layers)
    expanded = report.get("expanded_layers", sorted(tm | te))
    lines.append(
        f"TM layers {sorted(tm)}, TE layers {sorted(te)}: {len(expanded)} of {depth} layers expanded "
        f"({100 * len(expanded) / max(depth, 1):.0f}%)"
    )
    if "params_added" in report:
        added, pct, before = report["params_added"], report["param_overhead_pct"], report["params_before"]
        lines.append(f"parameters +{added:,} (+{pct:.3f}% of {before:,})")
    t = analysis.timings
    if t:
        lines.append(
            f"calibration ({analysis.covariance_batches} + {analysis.conflict_batches} batches): covariance "
            f"{_fmt_s(t.get('covariance_s', 0.0))}, eigendecomposition {_fmt_s(t.get('eigen_s', 0.0))}, "
            f"conflicts {_fmt_s(t.get('conflicts_s', 0.0))}"
        )
    if "inference_flops_ratio" in report:
        line = (
            f"inference FLOPs x{report['inference_flops_ratio']:.3f} for all tasks "
            f"({report['inference_flops_overhead_per_task_pct']:+.1f}% per task), "
            f"{report['inference_flops_overhead_single_task_pct']:+.1f}% for one task alone"
        )
        if "inference_ratio" in report:
            line += f"; time x{report['inference_ratio']:.3f} for all tasks"
        lines.append(line)
    return "\n".join(lines)
