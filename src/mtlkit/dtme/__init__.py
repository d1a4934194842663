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

#: model transforms the Trainer can apply by name: name -> callback class
TRANSFORM_CALLBACKS: dict[str, type] = {"dtme": DTMECallback, "recon": ReconCallback}


def make_transform(
    transform: Any, options: dict[str, Any] | None = None, iters: int | None = None, dataset: str | None = None
) -> Any:
    """A Trainer transform from a name (``"dtme"``), a ``(name, options)`` pair, ``{name: options}`` or a
    callback instance (bound to the run's ``iters``). ``dataset`` resolves ``calib_batches=auto`` to the
    paper's calibration set for it (:func:`calibration_batches_for`)."""
    if isinstance(transform, tuple) and len(transform) == 2:
        transform, options = transform
    elif isinstance(transform, dict) and len(transform) == 1:
        (transform, options), = transform.items()
    if isinstance(transform, str):
        cls = TRANSFORM_CALLBACKS.get(transform)
        if cls is None:
            raise MtlkitError(f"unknown model transform {transform!r}; valid: {', '.join(TRANSFORM_CALLBACKS)}")
        callback = cls(dict(options or {}), iters=iters)
        callback.config = callback.config.for_dataset(dataset)
        return callback
    if options:
        raise MtlkitError("transform options only apply to a transform given by name")
    bind = getattr(transform, "bind", None)
    if callable(bind) and iters is not None:
        bind(iters)
    if not callable(getattr(transform, "on_iteration_start", None)):
        raise MtlkitError(f"a transform must be a name ({', '.join(TRANSFORM_CALLBACKS)}) or a trainer callback, "
                          f"got {transform!r}")
    return transform


def make_transforms(
    transforms: dict[str, dict[str, Any] | None], iters: int | None = None, dataset: str | None = None
) -> list[Any]:
    """The callbacks of a config's ``transforms`` section (``{"dtme": {...}}``), in order."""
    if "dtme" in transforms and "recon" in transforms:
        raise MtlkitError("--dtme and --recon cannot be combined in one run (each calibrates an unexpanded model)")
    return [make_transform(name, opts, iters, dataset) for name, opts in transforms.items()]


def make_callbacks(config: Any) -> list[Any]:
    """The trainer callbacks for a config's ``dtme`` / ``recon`` options (None = off)."""
    return make_transforms(dict(getattr(config, "transforms", None) or
                                {k: getattr(config, k) for k in ("dtme", "recon") if getattr(config, k) is not None}),
                           config.iters, getattr(config, "dataset", None))


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
    "make_transform",
    "make_transforms",
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
