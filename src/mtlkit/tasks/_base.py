"""The Task type, the task registry and :func:`make_task`."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from mtlkit._registry import Registry
from mtlkit.errors import MtlkitError
from mtlkit.metrics import Meter

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: what a task's head predicts: per pixel (``dense``) or one output per sample (the others)
KINDS = ("dense", "classification", "binary", "multilabel", "regression")
#: how a prediction is shown and post-processed
DISPLAYS = ("labels", "depth", "normals", "prob", "regression")


@dataclass(frozen=True)
class Task:
    """One task: what its head outputs, how it is trained (loss) and judged (meter, primary metric).

    The contract every task meets, a built-in one, a ``make_task`` factory's or a user's own:

    - ``name``: the key of the task in the model's output dict and in the batch's targets.
    - ``channels``: the number of outputs the head produces (per pixel for dense tasks).
    - ``loss(pred, target) -> scalar tensor``: ``pred`` is the head's raw output, ``target`` the batch's.
    - ``meter() -> Meter``: a fresh :class:`mtlkit.metrics.Meter` (``update(pred, target)`` / ``state()`` /
      ``compute() -> {metric: value}``) accumulating a whole split.
    - ``primary`` and ``higher_is_better``: the metric Δm and model selection use, and its direction.
    - ``directions``: higher-is-better of every score the meter reports (the meter's ``directions``, or
      ``metric_directions`` given here); Δm over any metric needs them.
    - ``kind`` (one of :data:`KINDS`): ``"dense"`` outputs (B, C, H, W); the others one output per sample.
      ``display`` (one of :data:`DISPLAYS`) says how :meth:`postprocess` turns outputs into predictions and
      how prediction pictures draw them.

    A user's task is either an instance (``Task("energy", 1, my_loss, GenericRegressionMeter, "mae", False,
    kind="regression")``) or a subclass that overrides :meth:`loss` / :meth:`meter` (then ``loss_fn`` /
    ``meter_factory`` may be ``None``). ``factory`` and ``params`` rebuild a registered task:
    ``make_task(task.factory, **task.params)``.
    """

    name: str
    channels: int
    loss_fn: LossFn | None
    meter_factory: Callable[[], Meter] | None
    primary: str
    higher_is_better: bool
    kind: str = "dense"
    display: str = "regression"
    params: dict[str, Any] = field(default_factory=dict)
    #: directions of the meter's scores when the meter does not declare them (``Meter.directions``)
    metric_directions: Mapping[str, bool] | None = None
    #: the registry name that built this task (``""``: the task's own name, or not registered)
    factory: str = ""
    #: ``count_fn(target)``: how many elements ``loss`` averages over (valid pixels, non-ignored labels);
    #: None = a per-sample mean (the batch size). With several processes the engine weights each process's
    #: loss by its share of the global count, so loss and gradient are the global batch's exact mean.
    count_fn: Callable[[Any], Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MtlkitError(f"task {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.display not in DISPLAYS:
            raise MtlkitError(
                f"task {self.name!r}: display must be one of {', '.join(DISPLAYS)}, got {self.display!r}"
            )
        if not isinstance(self.channels, int) or self.channels < 1:
            raise MtlkitError(f"task {self.name!r}: channels must be a positive int, got {self.channels!r}")

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.loss_fn is None:
            raise NotImplementedError(f"task {self.name!r} has no loss_fn: pass one or override Task.loss")
        return self.loss_fn(pred, target)

    def loss_count(self, target: Any) -> float:
        """The number of elements :meth:`loss` averages over for ``target`` (see ``count_fn``)."""
        if self.count_fn is not None:
            return float(self.count_fn(target))
        return float(len(target))

    def meter(self) -> Meter:
        if self.meter_factory is None:
            raise NotImplementedError(f"task {self.name!r} has no meter_factory: pass one or override Task.meter")
        return self.meter_factory()

    @property
    def dense(self) -> bool:
        """Whether the head predicts per pixel (B, C, H, W) rather than one output per sample."""
        return self.kind == "dense"

    @property
    def directions(self) -> dict[str, bool]:
        """``{metric: higher_is_better}`` for every score of the meter, the primary's taken from the task."""
        given = self.metric_directions
        if given is None:
            given = getattr(self.meter(), "directions", None) or {}
        out = dict(given)
        if out.get(self.primary, self.higher_is_better) != self.higher_is_better:
            raise MtlkitError(
                f"task {self.name!r}: primary metric {self.primary!r} has higher_is_better={self.higher_is_better} "
                f"but its meter says {out[self.primary]}; make them agree"
            )
        out[self.primary] = self.higher_is_better
        return out

    def postprocess(self, pred: torch.Tensor) -> torch.Tensor:
        """Raw head output -> a prediction in label space (class index, probability, unit normal, value)."""
        if self.display == "labels":
            return pred.argmax(1)
        if self.display == "prob":
            return torch.sigmoid(pred)
        if self.display == "normals":
            return F.normalize(pred, dim=1)
        return pred


TASKS: Registry[Callable[..., Task]] = Registry("task")


def make_task(factory: str, /, **params: Any) -> Task:
    """Build a registered task with its parameters, e.g. ``make_task("semseg", num_classes=21)`` or
    ``make_task("binary", name="income")``; a wrong or missing parameter is an :class:`MtlkitError`."""
    fn = TASKS.get(factory)
    try:
        inspect.signature(fn).bind(**params)
    except TypeError as e:
        options = [p for p in inspect.signature(fn).parameters]
        raise MtlkitError(
            f"task {factory!r}: {e}; its options: {', '.join(options) or 'none'}"
        ) from None
    return fn(**params)


def zero_loss(pred: torch.Tensor) -> torch.Tensor:
    """0 with a (zero) gradient: a batch without a valid target must not give NaN (mean over nothing)."""
    return pred.sum() * 0.0


def check_primary(task: str, primary: str, directions: Mapping[str, bool]) -> bool:
    """The direction of ``primary`` among a meter's scores; an unknown one is an error naming the valid ones."""
    if primary not in directions:
        raise MtlkitError(f"task {task!r}: primary must be one of {', '.join(directions)}, got {primary!r}")
    return directions[primary]
