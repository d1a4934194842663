"""DTME-MTL (token modulation and expansion) and the Recon baseline.

- Token-space analysis (:func:`analyze_token_space`): per block, the uncentred token covariance, its
  range / null split and the range- and null-space gradient conflicts of every task pair.
- Expansion (:func:`expand`, the ``dtme`` model transform, :class:`DTMECallback` for the trainer).
- Recon (:func:`recon_expand`, the ``recon`` transform, :class:`ReconCallback`).

Importing this package registers the ``dtme`` / ``recon`` model transforms and the ``tokens`` / ``recon``
plots, so checkpoints of expanded models rebuild with :func:`mtlkit.models.apply_transforms`.
"""

from __future__ import annotations

from typing import Any

from mtlkit.dtme._calibrate import analyze_token_space, token_covariances, token_gradients
from mtlkit.dtme._config import DTMEConfig, ReconConfig, calibration_batches_for
from mtlkit.dtme._conflicts import ConflictAccumulator, pair_conflict_counts
from mtlkit.dtme._expand import DTMECallback, Expansion, apply_dtme, expand, load_analysis
from mtlkit.dtme._expanded import DTME_SPEC_VERSION, ExpandedBackbone, expanded_backbone
from mtlkit.dtme._measure import count_parameters, forward_flops, inference_seconds, overhead_pct
from mtlkit.dtme._modules import AffineModulator, BatchNormModulator, TaskBlocks, TokenExpander
from mtlkit.dtme._plots import plot_recon, plot_token_space
from mtlkit.dtme._recon import ParameterConflicts, ReconCallback, apply_recon, parameter_conflicts, recon_expand
from mtlkit.dtme._result import (
    ANALYSIS_FILE,
    END_ANALYSIS_FILE,
    LayerTokenSpace,
    TokenSpaceAnalysis,
    conflict_change,
    expansion_table,
)
from mtlkit.dtme._select import expanded_layers, num_layers, select_layers
from mtlkit.dtme._tokenspace import (
    TokenCovariance,
    eigh_descending,
    project,
    range_null_components,
    split_index,
    variance_captured,
)
from mtlkit.errors import MtlkitError


def make_callbacks(config: Any) -> list[Any]:
    """The trainer callbacks for a TrainConfig's ``dtme`` / ``recon`` options (None = off)."""
    if config.dtme is not None and config.recon is not None:
        raise MtlkitError("--dtme and --recon cannot be combined in one run (each calibrates an unexpanded model)")
    callbacks: list[Any] = []
    dataset = getattr(config, "dataset", None)  # calib_batches=auto: the paper's calibration set for it
    if config.dtme is not None:
        callbacks.append(DTMECallback(DTMEConfig.from_dict(config.dtme).for_dataset(dataset), iters=config.iters))
    if config.recon is not None:
        callbacks.append(ReconCallback(ReconConfig.from_dict(config.recon).for_dataset(dataset), iters=config.iters))
    return callbacks


__all__ = [
    "ANALYSIS_FILE",
    "DTME_SPEC_VERSION",
    "END_ANALYSIS_FILE",
    "AffineModulator",
    "BatchNormModulator",
    "ConflictAccumulator",
    "DTMECallback",
    "DTMEConfig",
    "ExpandedBackbone",
    "Expansion",
    "LayerTokenSpace",
    "ParameterConflicts",
    "ReconCallback",
    "ReconConfig",
    "TaskBlocks",
    "TokenCovariance",
    "TokenExpander",
    "TokenSpaceAnalysis",
    "analyze_token_space",
    "apply_dtme",
    "apply_recon",
    "calibration_batches_for",
    "conflict_change",
    "count_parameters",
    "eigh_descending",
    "expand",
    "expanded_backbone",
    "expanded_layers",
    "expansion_table",
    "forward_flops",
    "inference_seconds",
    "load_analysis",
    "make_callbacks",
    "num_layers",
    "overhead_pct",
    "pair_conflict_counts",
    "parameter_conflicts",
    "plot_recon",
    "plot_token_space",
    "project",
    "range_null_components",
    "recon_expand",
    "select_layers",
    "split_index",
    "token_covariances",
    "token_gradients",
    "variance_captured",
]
