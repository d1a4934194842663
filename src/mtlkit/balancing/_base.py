"""The balancing interface: turn per-task losses into gradients on every parameter (fills ``.grad``).

A balancer is used from any training loop::

    balancer = mtlkit.balancing.get("equal")
    info = balancer.backward(losses, shared=model.shared_parameters())
    optimizer.step()

``info`` is a dict of what the method decided (at least ``"weights"``: task -> float) for logging;
gradient-based methods add ``"grad_norms"`` (task -> ||g_t||), ``"conflicts"`` (pairs with g_i·g_j < 0) and,
for aggregators, ``"fallback"`` (1 when a solver failed and equal weights were used for the step).
Task order is the order of the ``losses`` dict; stateful methods fix it at the first call.

``features`` (the backbone outputs every head reads: a list of tensors, or ``{task: list}`` when the
backbone forks per task) lets gradient-based methods split the per-task work at the representation, which
is cheaper; they also work without it. Methods with learnable parameters (UW, GradNorm, IMTL) list them in
:meth:`Balancer.parameters` for the optimizer; :meth:`Balancer.state_dict` holds what an exact resume needs.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
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
    #: the method uses per-task gradients: the trainer passes the shared features (a cut point that makes
    #: per-task gradients cheaper; see :mod:`mtlkit.balancing._grads`)
    needs_features: ClassVar[bool] = False
    #: optional packages the method needs (checked at construction; the install hint names the extra)
    requires: ClassVar[tuple[str, ...]] = ()
    #: the strategy should call :meth:`post_step` with the losses re-computed after the optimizer step
    needs_post_step_losses: ClassVar[bool] = False

    def __init__(self, tasks: Sequence[str] | None = None) -> None:
        missing = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if missing:
            raise MtlkitError(
                f"method {self.name!r} needs {', '.join(missing)}: install them with pip install 'mtlkit[solvers]'"
            )
        self.tasks: list[str] | None = list(tasks) if tasks is not None else None

    def _check_tasks(self, losses: Losses) -> None:
        if self.tasks is None:
            self.tasks = list(losses)
        elif set(losses) != set(self.tasks):
            raise MtlkitError(f"{self.name}: got losses for {sorted(losses)}, expected {sorted(self.tasks)}")
        if self._optimised_checks < 3:
            self._check_optimised()

    _optimised_checks = 0

    def _check_optimised(self) -> None:
        """Warn once when the method's parameters are in no optimizer: over the first backward calls their
        values never change while gradients pile up on them (mtlkit.Trainer always optimises them)."""
        self._optimised_checks += 1
        try:
            params = [p for p in self.parameters() if p is not None]
        except MtlkitError:
            return
        if not params:
            self._optimised_checks = 3
            return
        snap = [p.detach().clone() for p in params]
        prev, self._snapshot = getattr(self, "_snapshot", None), snap
        if prev is None or len(prev) != len(snap) or any(a.shape != b.shape for a, b in zip(prev, snap, strict=True)):
            return
        unchanged = all(torch.equal(a.to(b.device), b) for a, b in zip(prev, snap, strict=True))
        if unchanged and any(p.grad is not None and bool(p.grad.ne(0).any()) for p in params):
            self._optimised_checks = 3
            warnings.warn(
                f"{self.name}: its learnable parameters (balancer.parameters()) are in no optimizer and never train; "
                "add them: torch.optim.Adam([*model.parameters(), *balancer.parameters()]) (mtlkit.Trainer does)",
                UserWarning, stacklevel=3,
            )

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

    @property
    def needs_shared_representation(self) -> bool:
        """The method works on one representation read by every head (``on="features"``): it cannot run on a
        backbone that forks per task (DTME, Recon); the trainer refuses that combination before training."""
        return False

    def setup(self, *, epoch_iters: int | None = None, model: nn.Module | None = None) -> None:  # noqa: B027
        """Called once by the trainer before training: ``epoch_iters`` is the number of iterations of one epoch
        of the training set (DWA's period); ``model`` the model about to be trained (aggregators with
        ``engine="autogram"`` hook it before its first forward). A user loop may call it too; without it
        methods use the fallback their docstring names."""

    def report(self) -> dict[str, Any]:
        """What the method learned over the whole run, for ``metrics.json`` (``"method_report"``); e.g.
        AvgNorm's average weights (the imbalance paper's Tab. VI). Empty by default."""
        return {}

    def parameters(self) -> list[nn.Parameter]:
        """Learnable parameters of the method itself (e.g. UW's log-variances): the trainer optimises them."""
        return []

    def post_step(self, losses: Losses) -> None:  # noqa: B027  (most methods need nothing after the step)
        """Called by the strategy after the optimizer step with the same batch's losses re-computed (no
        graph), when :attr:`needs_post_step_losses` is set (FAMO's exact update)."""

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
        scaled(total, grad_scale_of(self.name, context)).backward()
        return {"weights": {t: float(w[t]) for t in self.tasks}, "loss": float(total.detach())}


BALANCERS: Registry[type[Balancer]] = Registry("method")


def get(name: str, tasks: Sequence[str] | None = None, **options: Any) -> Balancer:
    """A balancer by registry name; options are the method's hyper-parameters (e.g. ``c=0.4``)."""
    cls = BALANCERS.get(name)
    unknown = set(options) - set(cls.options)
    if unknown:
        valid = ", ".join(f"{k} (default {v!r})" for k, v in cls.options.items()) or "none"
        raise MtlkitError(f"method {name!r} has no option(s) {', '.join(sorted(unknown))}; valid: {valid}")
    try:
        return cls(tasks, **options)
    except (TypeError, ValueError) as e:  # a wrong type or range (e.g. ``c=abc`` from the command line)
        given = ", ".join(f"{k}={v!r}" for k, v in options.items())
        defaults = ", ".join(f"{k} (default {v!r})" for k, v in cls.options.items()) or "none"
        raise MtlkitError(f"method {name!r}: bad option value(s) {given} ({e}); options: {defaults}") from e


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


# ------------------------------------------------------------------------------------ helpers
def resolve_shared(method: str, shared: Sequence[nn.Parameter] | None, context: dict[str, Any]) -> list[nn.Parameter]:
    """The shared parameters: as given, else ``context["model"].shared_parameters()``."""
    if shared is None and context.get("model") is not None:
        shared = context["model"].shared_parameters()
    params = [p for p in (shared or []) if p.requires_grad]
    if not params:
        raise MtlkitError(
            f"{method}: needs the shared parameters: call backward(losses, shared=model.shared_parameters())"
        )
    return params


def resolve_last_shared(
    method: str, shared: Sequence[nn.Parameter] | None, context: dict[str, Any]
) -> list[nn.Parameter]:
    """The last shared layer: ``context["last_shared"]``, else ``model.last_shared_parameters()``."""
    last = context.get("last_shared")
    if last is None and context.get("model") is not None:
        last = context["model"].last_shared_parameters()
    params = [p for p in (last or []) if p.requires_grad]
    if not params:
        raise MtlkitError(
            f"{method}: needs the last shared layer: pass last_shared=model.last_shared_parameters() "
            "(or the option params=all)"
        )
    return params


def grad_scale_of(method: str, context: dict[str, Any]) -> float | None:
    """The loss scale S of the step (context ``grad_scale``: a ``torch.amp.GradScaler`` or its
    ``get_scale()``), or None without one or when the scaler is disabled. See the package docstring."""
    s = context.get("grad_scale")
    if s is None:
        return None
    if hasattr(s, "get_scale") and hasattr(s, "is_enabled"):  # a GradScaler
        if not s.is_enabled():
            return None
        if getattr(s, "_scale", None) is None:  # created lazily by its first scale(); no public accessor
            s.scale(torch.ones((), device=getattr(s, "_device", "cpu")))
        s = s.get_scale()
    try:
        s = float(s)
    except (TypeError, ValueError):
        raise MtlkitError(f"{method}: grad_scale must be a GradScaler or a number, got {s!r}") from None
    if not (math.isfinite(s) and s > 0):
        raise MtlkitError(f"{method}: grad_scale must be finite and > 0, got {s}")
    return s


def scaled(loss: torch.Tensor, scale: float | None) -> torch.Tensor:
    """``scale * loss`` (what is back-propagated under a GradScaler), or ``loss`` without one."""
    return loss if scale is None else loss * scale


def solver_view(jac: torch.Tensor, scale: float | None) -> torch.Tensor:
    """Per-task gradients as the methods' decisions must see them: at least float32 (half-precision
    gradients are cast, so norms, Gramians and solver inputs do not overflow or lose digits) and divided by
    the loss scale. Works in place on a float32/64 buffer the caller owns."""
    if jac.dtype in (torch.float16, torch.bfloat16):
        jac = jac.float()
    return jac if scale is None else jac.div_(scale)


def clip_unscaled(params: Sequence[nn.Parameter], max_norm: float, scale: float | None) -> float:
    """``clip_grad_norm_(params, max_norm)`` applied to the unscaled gradient (``.grad / scale``), as a
    GradScaler user does after ``scaler.unscale_``; the gradients stay scaled. Returns the unscaled norm."""
    if scale is None:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = float(torch.nn.utils.get_total_norm(grads)) / scale
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        torch._foreach_mul_(grads, coef)
    return norm


def mark_overflow(params: Sequence[nn.Parameter]) -> None:
    """Make the step visibly non-finite (``inf`` in the first parameter's ``.grad``) so that a GradScaler
    skips it and lowers its scale, as it does for any overflowing backward."""
    p = params[0]
    if p.grad is None:
        p.grad = torch.full_like(p, float("inf"))
    else:
        p.grad.fill_(float("inf"))


def place(param: nn.Parameter, device: torch.device) -> None:
    """Move a method's own parameter to ``device`` in place (the optimizer keeps the same object)."""
    if param.device != device:
        param.data = param.data.to(device)
        if param.grad is not None:
            param.grad = param.grad.to(device)


def need_tasks(method: str, tasks: list[str] | None) -> list[str]:
    if tasks is None:
        raise MtlkitError(
            f"{method} has learnable parameters and needs the task names when built: "
            f"mtlkit.balancing.get({method!r}, tasks=[...])"
        )
    return tasks
