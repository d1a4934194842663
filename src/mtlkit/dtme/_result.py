"""The token-space analysis result: per layer split, variance, conflict rates and matrices, plus timings (JSON)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mtlkit.errors import MtlkitError

#: file name of the analysis inside a run directory (read by the ``tokens`` plotter)
ANALYSIS_FILE = "token_space.json"


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
        """The compact per-layer view for ``metrics.json`` (no matrices or spectra)."""
        return {
            "r": self.r,
            "k": [layer.k for layer in self.layers],
            "variance_captured": [round(layer.variance_captured, 6) for layer in self.layers],
            "range_conflict_rate": [round(v, 6) for v in self.range_rates()],
            "null_conflict_rate": [round(v, 6) for v in self.null_rates()],
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
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
