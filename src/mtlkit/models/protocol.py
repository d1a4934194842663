"""What mtlkit needs from a model, and the one way it calls one.

Any ``nn.Module`` whose ``forward(inputs)`` returns ``{task: output}`` trains. A model that also implements
:class:`MultiTaskProtocol` serves every method: gradient methods and selective updates need the shared /
task-specific split (``shared_parameters()``, ``task_parameters(t)``); methods on the shared representation
(``on=features``, e.g. MGDA-UB, GradDrop) need ``forward_features`` / ``forward_heads``; AvgNorm / GradNorm
use ``last_shared_parameters()`` when present (else all shared parameters).
:class:`mtlkit.models.SharedBottom` implements all of it for any encoder. The engine's checker
(``mtlkit.engine.check_model``) refuses, before training, a method the model cannot serve.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from mtlkit.errors import MtlkitError


@runtime_checkable
class MultiTaskProtocol(Protocol):
    """The parameter split mtlkit's gradient methods and selective updates need (duck-typed)."""

    def shared_parameters(self) -> list[nn.Parameter]: ...

    def task_parameters(self, task: str) -> list[nn.Parameter]: ...


def has_features(model: nn.Module) -> bool:
    """Whether ``model`` exposes its shared representation (``forward_features`` and ``forward_heads``; an
    architecture without one says so with ``has_shared_representation = False``)."""
    if not getattr(model, "has_shared_representation", True):
        return False
    return callable(getattr(model, "forward_features", None)) and callable(getattr(model, "forward_heads", None))


def run_model(
    model: nn.Module, inputs: Any, tasks: Iterable[str] | None = None, features: bool = False
) -> tuple[dict[str, torch.Tensor], Any]:
    """``(outputs, features or None)``: through ``forward_features`` / ``forward_heads`` when the model has
    them (the features then come for free), else ``model(inputs)``."""
    names = None if tasks is None else list(tasks)
    if getattr(model, "forward_returns_cut", False):  # mtlkit.models.arch: features = the balancing cut
        out, feats = model(inputs, names, return_features=True)
    elif has_features(model):
        feats = model.forward_features(inputs)
        out = model.forward_heads(feats) if names is None else model.forward_heads(feats, names)
    else:
        feats = None
        out = model(inputs)
    if not isinstance(out, Mapping):
        raise MtlkitError(
            f"{type(model).__name__}.forward returned {type(out).__name__}; a multi-task model must return "
            "{task: output} (wrap your encoder and heads in mtlkit.models.SharedBottom)"
        )
    if names is not None:
        missing = [t for t in names if t not in out]
        if missing:
            raise MtlkitError(f"{type(model).__name__} returned no output for task(s) {missing}; got {list(out)}")
    return dict(out), feats


def shared_parameters(model: nn.Module) -> list[nn.Parameter] | None:
    fn = getattr(model, "shared_parameters", None)
    return list(fn()) if callable(fn) else None


def last_shared_parameters(model: nn.Module) -> list[nn.Parameter] | None:
    fn = getattr(model, "last_shared_parameters", None)
    return list(fn()) if callable(fn) else shared_parameters(model)
