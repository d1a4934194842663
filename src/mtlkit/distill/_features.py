"""Which feature a model exposes for distillation (the contract URL and the feature-distance probe rely on).

**Contract.** A model exposes its features with ``forward_features(x)`` (the method of mtlkit's model
protocol that the balancers already use; :class:`mtlkit.models.MultiTaskModel` has it). Which of them is
distilled is named by the model's optional attribute ``distill_feature``:

- an ``int``: an index into the feature list (default ``-1``: the last one; for a ``MultiTaskModel`` that is
  the backbone's last feature map);
- a ``str``: a key, when ``forward_features`` returns a dict of named features (``{"layer3": ..., "out": ...}``);
- a list of them: several student features, each with its own 1x1 convolution, their distances summed (as
  the official SegNet student, which distils both its bottleneck and its last map, ``nyu_url.py`` lines
  174-195). A teacher uses the last entry only (the official teacher gives ``feat_ti[-1]``, lines 186-187).

A backbone that forks into per-task streams returns ``{task: features}``; task ``t`` is then distilled from
its own stream. Features are maps ``(B, C, H, W)`` or vectors ``(B, C)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import torch
from torch import nn

from mtlkit.errors import MtlkitError

Selector = Union[int, str]  # noqa: UP007  (a runtime alias)
Select = Union[Selector, Sequence[Selector]]  # noqa: UP007

DEFAULT_SELECT: Selector = -1


def model_select(model: Any, select: Select | None = None) -> Select:
    """The selector to use for ``model``: ``select`` if given, else ``model.distill_feature``, else ``-1``."""
    if select is not None:
        return select
    return getattr(model, "distill_feature", DEFAULT_SELECT)


def _selectors(select: Select) -> list[Selector]:
    if isinstance(select, (int, str)):
        return [select]
    out = list(select) if isinstance(select, (list, tuple)) else []
    if not out or not all(isinstance(s, (int, str)) for s in out):
        raise MtlkitError(f"distill_feature must be an int, a str or a list of them, got {select!r}")
    return out


def _pick_one(feats: Any, sel: Selector) -> torch.Tensor:
    if isinstance(feats, torch.Tensor):
        if sel not in (0, -1):
            raise MtlkitError(f"the model exposes one feature tensor; distill_feature {sel!r} must be -1 or 0")
        return feats
    if isinstance(feats, Mapping):
        if sel not in feats:
            raise MtlkitError(f"distill_feature {sel!r} is not among the model's named features {list(feats)}")
        return feats[sel]
    if isinstance(feats, (list, tuple)):
        if not isinstance(sel, int) or not -len(feats) <= sel < len(feats):
            raise MtlkitError(
                f"distill_feature {sel!r} does not index the model's {len(feats)} features; use an int in "
                f"[{-len(feats)}, {len(feats) - 1}]"
            )
        return feats[sel]
    raise MtlkitError(f"cannot take a distillation feature from {type(feats).__name__}; expose a tensor, list or dict")


def select_features(features: Any, select: Select = DEFAULT_SELECT, task: str | None = None) -> list[torch.Tensor]:
    """The student features to distil for ``task``, from what ``forward_features`` returned (a list).

    ``features`` of the form ``{task: features}`` (a backbone forked per task) give task ``task``'s stream,
    unless a ``str`` selector names a key of it.
    """
    sels = _selectors(select)
    if isinstance(features, Mapping) and task is not None and task in features and not any(
        isinstance(s, str) and s in features for s in sels
    ):
        features = features[task]
    picked = [_pick_one(features, s) for s in sels]
    for f in picked:
        if not isinstance(f, torch.Tensor) or f.dim() not in (2, 4):
            shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise MtlkitError(f"a distilled feature must be (B, C, H, W) or (B, C), got {shape}")
    return picked


def teacher_feature(output: Any) -> torch.Tensor:
    """A teacher's distilled feature from its output: a tensor as is, the last of a list (``nyu_url.py``
    lines 186-187)."""
    if isinstance(output, (list, tuple)):
        if not output:
            raise MtlkitError("a teacher returned no features")
        output = output[-1]
    if not isinstance(output, torch.Tensor) or output.dim() not in (2, 4):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise MtlkitError(f"a teacher must map inputs to features (B, C, H, W) or (B, C), got {shape}")
    return output


def freeze(module: nn.Module) -> nn.Module:
    """Freeze a teacher in place: no parameter requires a gradient, eval mode (BatchNorm uses the teacher's
    trained statistics and never updates them). Returns ``module``."""
    module.requires_grad_(False)
    module.eval()
    return module


class FeatureExtractor(nn.Module):
    """Turns a single-task model into a teacher: ``inputs -> its distilled feature``.

    Calls ``model.forward_features(x)`` and takes the feature named by ``select`` (else the model's
    ``distill_feature``, else the last); of a list of selectors the last is used (see the module docstring).
    """

    def __init__(self, model: nn.Module, select: Select | None = None) -> None:
        super().__init__()
        if not callable(getattr(model, "forward_features", None)):
            raise MtlkitError(
                f"{type(model).__name__} has no forward_features(x); a teacher (or a distilled student) must expose "
                "its features with it (mtlkit.models.MultiTaskModel and SharedBottom do)"
            )
        self.model = model
        self.select = _selectors(model_select(model, select))[-1]

    def forward(self, x: Any) -> torch.Tensor:
        feats = self.model.forward_features(x)
        if isinstance(feats, Mapping) and not (isinstance(self.select, str) and self.select in feats):
            if len(feats) == 1:  # a single-task model whose backbone forks gives {task: features}
                feats = next(iter(feats.values()))
        return select_features(feats, self.select)[0]


def build_teacher(
    factory: Callable[[], nn.Module], state_dict: Mapping[str, Any] | None = None, select: Select | None = None
) -> FeatureExtractor:
    """A frozen teacher from a model factory and its trained weights, without touching the global RNG.

    ``factory()`` builds the single-task model (its layers' random init runs under
    ``torch.random.fork_rng``, so a run draws the same random numbers with or without teachers); then
    ``state_dict`` is loaded (strictly) and the model wrapped in :class:`FeatureExtractor` and frozen.
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        model = factory()
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return freeze(FeatureExtractor(model, select))  # type: ignore[return-value]


def channels_of(features: Sequence[torch.Tensor]) -> list[int]:
    return [int(f.shape[1]) for f in features]
