"""The balancing interface: turn per-task losses into gradients on every parameter (fills ``.grad``).

A balancer is used from any training loop::

    balancer = mtlkit.balancing.get("equal")
    info = balancer.backward(losses, shared=model.shared_parameters())
    optimizer.step()

``info`` is a dict of what the method decided (at least ``"weights"``: task -> float) for logging.
Task order is the order of the ``losses`` dict; stateful methods fix it at the first call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from mtlkit._registry import Registry
from mtlkit.errors import MtlkitError

Losses = dict[str, torch.Tensor]


class Balancer(ABC):
    """Base class of balancing methods (loss weightings and gradient aggregators)."""

    #: registry name (lower case, as on the CLI)
    name: ClassVar[str] = ""
    #: ``"loss weighting"``, ``"gradient aggregation"``, ``"strategy"`` or ``"architecture"``
    kind: ClassVar[str] = "loss weighting"
    #: the paper that defines the method (short citation)
    paper: ClassVar[str] = ""
    #: the options the method takes, for ``mtlkit methods`` (name -> default)
    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, tasks: Sequence[str] | None = None) -> None:
        self.tasks: list[str] | None = list(tasks) if tasks is not None else None

    def _check_tasks(self, losses: Losses) -> None:
        if self.tasks is None:
            self.tasks = list(losses)
        elif set(losses) != set(self.tasks):
            raise MtlkitError(f"{self.name}: got losses for {sorted(losses)}, expected {sorted(self.tasks)}")

    @abstractmethod
    def backward(
        self,
        losses: Losses,
        shared: Sequence[nn.Parameter] | None = None,
        features: Sequence[torch.Tensor] | None = None,
        **context: Any,
    ) -> dict[str, Any]:
        """Back-propagate the balanced objective; ``context`` may hold ``last_shared`` (parameters of the
        last shared layer), ``iteration`` and ``model``. Returns logging info with ``"weights"``."""

    def parameters(self) -> list[nn.Parameter]:
        """Learnable parameters of the method itself (e.g. UW's log-variances): the trainer optimises them."""
        return []

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (tensors and plain values)."""
        return {"tasks": self.tasks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tasks = state.get("tasks", self.tasks)


class WeightedSum(Balancer):
    """Back-propagates Σ_t w_t L_t with weights from :meth:`weights` (detached)."""

    @abstractmethod
    def weights(self, losses: Losses, **context: Any) -> dict[str, float]: ...

    def backward(self, losses, shared=None, features=None, **context):
        self._check_tasks(losses)
        w = self.weights(losses, shared=shared, features=features, **context)
        total = sum(w[t] * losses[t] for t in self.tasks)
        total.backward()
        return {"weights": {t: float(w[t]) for t in self.tasks}, "loss": float(total.detach())}


BALANCERS: Registry[type[Balancer]] = Registry("method")


def get(name: str, tasks: Sequence[str] | None = None, **options: Any) -> Balancer:
    """A balancer by registry name; options are the method's hyper-parameters (e.g. ``c=0.4``)."""
    cls = BALANCERS.get(name)
    unknown = set(options) - set(cls.options)
    if unknown:
        valid = ", ".join(f"{k} (default {v!r})" for k, v in cls.options.items()) or "none"
        raise MtlkitError(f"method {name!r} has no option(s) {', '.join(sorted(unknown))}; valid: {valid}")
    return cls(tasks, **options)


@BALANCERS.register("equal")
class Equal(WeightedSum):
    """Equal weights: plain gradient descent on Σ_t L_t (GD in the papers' tables)."""

    name = "equal"
    paper = "-"

    def weights(self, losses, **context):
        return dict.fromkeys(losses, 1.0)


@BALANCERS.register("fixed")
class Fixed(WeightedSum):
    """Fixed per-task weights (``weights={"semseg": 1, "edge": 50}``; unlisted tasks get 1)."""

    name = "fixed"
    paper = "-"
    options = {"weights": None}

    def __init__(self, tasks=None, weights: dict[str, float] | None = None) -> None:
        super().__init__(tasks)
        self.fixed = {}
        for t, w in dict(weights or {}).items():
            try:
                self.fixed[t] = float(w)
            except (TypeError, ValueError):
                raise MtlkitError(f"fixed weight of task {t!r} must be a number, got {w!r}") from None
        bad = {t: w for t, w in self.fixed.items() if not (w >= 0)}
        if bad:
            raise MtlkitError(f"fixed weights must be >= 0, got {bad}")
        if self.tasks is not None:  # fail at construction, not at the first step, when the tasks are known
            self._check_weight_names(self.tasks)

    def _check_weight_names(self, tasks: Sequence[str]) -> None:
        unknown = set(self.fixed) - set(tasks)
        if unknown:
            raise MtlkitError(f"weights given for unknown task(s) {sorted(unknown)}; tasks: {list(tasks)}")

    def weights(self, losses, **context):
        self._check_weight_names(list(losses))
        return {t: self.fixed.get(t, 1.0) for t in losses}
