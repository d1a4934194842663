"""The check that a model can serve a run's method, strategy and transforms, before any training step.

What each part needs (see :mod:`mtlkit.models.protocol`): gradient methods the shared parameters;
methods on the shared representation (``on="features"``) ``forward_features`` / ``forward_heads``; a
task-specific learning rate (``lr_ts`` != 1) and selective updates the parameter split; DTME / Recon a ViT
backbone (``model.backbone`` with ``embed``, ``blocks``, ``out_indices``, ``tokens_to_map``).
A refusal is one line naming the method and what the model lacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from mtlkit.errors import MtlkitError
from mtlkit.models.protocol import has_features
from mtlkit.strategies._base import uses_shared_parameters

_FIX = "wrap your encoder and heads in mtlkit.models.SharedBottom(encoder, heads) or implement it"
_VIT = ("embed", "blocks", "out_indices", "tokens_to_map")


def _has(model: nn.Module, name: str) -> bool:
    return callable(getattr(model, name, None))


__all__ = ["check_model", "uses_shared_parameters"]


def check_model(
    model: nn.Module,
    tasks: Sequence[str],
    *,
    balancer: Any,
    strategy: Any = None,
    transforms: Sequence[Any] = (),
    lr_ts: float = 1.0,
) -> None:
    """Raise :class:`MtlkitError` when ``model`` cannot serve this combination (one line: what is missing)."""
    kind = type(model).__name__
    method = getattr(balancer, "name", type(balancer).__name__)
    from mtlkit.models.arch._build import check_arch_support

    check_arch_support(model, method, getattr(balancer, "on", None) == "features",
                       [getattr(t, "name", type(t).__name__) for t in transforms])
    if uses_shared_parameters(balancer) and not _has(model, "shared_parameters"):
        raise MtlkitError(f"method {method!r} needs model.shared_parameters(), which {kind} lacks; {_FIX}")
    if getattr(balancer, "on", None) == "features" and not has_features(model):
        raise MtlkitError(
            f"method {method!r} (on=features) needs model.forward_features / forward_heads, which {kind} lacks; "
            f"{_FIX}, or use --method-opt on=params"
        )
    sname = getattr(strategy, "name", "")
    if sname == "selective" and not (_has(model, "shared_parameters") and _has(model, "task_parameters")):
        raise MtlkitError(
            f"strategy 'selective' needs model.shared_parameters() and task_parameters(task), which {kind} lacks; "
            f"{_FIX}"
        )
    if lr_ts != 1.0 and not _has(model, "shared_parameters"):
        raise MtlkitError(f"lr_ts={lr_ts} needs model.shared_parameters() to tell heads from the shared part, "
                          f"which {kind} lacks; {_FIX}")
    for t in transforms:
        name = getattr(t, "name", type(t).__name__)
        backbone = getattr(model, "backbone", None)
        missing = [a for a in _VIT if backbone is None or not hasattr(backbone, a)]
        if missing or not (has_features(model) or hasattr(model, "token_taps")):  # taps: TaskPrompter
            what = "model.backbone" if backbone is None else f"{type(backbone).__name__}." + ", ".join(missing)
            raise MtlkitError(
                f"{name} expands a ViT's token stream and needs a ViT backbone (model.backbone with "
                f"{', '.join(_VIT)}); {kind} lacks {what or 'forward_features / forward_heads'}; use "
                "mtlkit.models.build_model or a MultiTaskModel"
            )
    if len(tasks) < 2 and transforms:
        name = getattr(transforms[0], "name", "the transform")
        raise MtlkitError(f"{name} needs at least two tasks, got {list(tasks)}")
