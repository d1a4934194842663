"""Update strategies: how one batch becomes optimizer steps.

``joint`` (the default) does one forward, one balanced backward and one optimizer step per batch. Other
strategies (selective task group updates) do several. A strategy sees the batch and a :class:`StepContext`
and returns logging info (at least ``"losses"``: task -> float).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from mtlkit._registry import Registry
from mtlkit.balancing import FAMO, GeometricLossStrategy, JacobianAggregator, UncertaintyWeighting, WeightedSum
from mtlkit.models.protocol import last_shared_parameters, run_model, shared_parameters
from mtlkit.strategies._guard import guarded_step


def _identity(x: Any) -> Any:
    return x


@dataclass
class StepContext:
    """Everything a strategy needs for one batch; the trainer builds it."""

    model: torch.nn.Module  # any module returning {task: output}; see mtlkit.models.MultiTaskProtocol
    tasks: dict[str, Any]  # name -> mtlkit.tasks.Task
    balancer: Any  # mtlkit.balancing.Balancer
    optimizer: torch.optim.Optimizer
    iteration: int = 0
    #: average the gradients across processes (no-op when not distributed); call before optimizer.step()
    sync_grads: Callable[[], None] = field(default=lambda: None)
    #: average detached per-task loss values across processes (identity when not distributed)
    reduce_losses: Callable[[dict[str, float]], dict[str, float]] = field(default=_identity)
    #: the balancer works on the shared representation (MGDA-UB style) and needs the features
    needs_features: bool = False
    #: optional gradient-statistics recorder (``mtlkit.analysis.GradStatsRecorder``); None = off
    grad_stats: Any = None
    #: the batch key of the model inputs (the trainer puts any batch form into this dict shape)
    input_key: str = "image"
    #: ``fn(params, name)`` adds parameters created during training (a task group's balancer) to the
    #: optimizer and the checkpoint; None outside the trainer
    add_parameters: Callable[[list[torch.nn.Parameter], str], None] | None = None
    #: iterations per epoch (for balancers created during training: ``balancer.setup(epoch_iters=...)``)
    epoch_iters: int | None = None
    #: an objective added AFTER the balancer (URL distillation, ``mtlkit.engine._distill``):
    #: ``fn(features, batch, tasks, grad_scale=...)`` back-propagates it (keeping the graph) before the
    #: balancer's backward, so gradients add and the balancer sees only the task losses; ``after_step()``
    #: follows each optimizer step (the distillation adaptors' own optimizer). None = off
    backward_hook: Callable[..., None] | None = None
    after_step: Callable[[], None] | None = None
    #: mixed precision (``mtlkit.engine._precision.Precision``: autocast forward, GradScaler step); None = fp32
    precision: Any = None
    #: several processes: ``fn({task: count}) -> {task: factor}`` weighting each process's loss by its share
    #: of the global count of averaged elements (``mtlkit.engine._distributed.global_mean_scales``), so that
    #: losses and the averaged gradient are the global batch's exact means; None = one process
    global_mean: Callable[[dict[str, float]], dict[str, float]] | None = None
    #: several processes with ``run.global_jacobian``: the all-reduce mean gradient aggregators apply to their
    #: Jacobian before aggregating (``mtlkit.engine._distributed.average_tensor``); None = per-process
    reduce_jacobian: Callable[[torch.Tensor], torch.Tensor] | None = None
    #: max global L2 norm of the model's gradients at each optimizer step (unscaled under fp16); None = off
    grad_clip: float | None = None


def compute_losses(ctx: StepContext, batch: dict[str, Any], tasks: list[str] | None = None):
    """Forward the model on ``batch`` and return (losses dict, features or None)."""
    names = list(ctx.tasks) if tasks is None else tasks
    prec = ctx.precision
    x = batch[ctx.input_key]
    out, feats = run_model(ctx.model, x) if prec is None else prec.forward(run_model, ctx.model, x)
    combine = getattr(ctx.model, "task_losses", None)  # architectures: main + auxiliary terms, one per task
    if callable(combine):
        return combine(out, batch, {t: ctx.tasks[t] for t in names}), feats
    losses = {t: ctx.tasks[t].loss(out[t], batch[t]) for t in names}
    if ctx.global_mean is not None:
        scale = ctx.global_mean({t: ctx.tasks[t].loss_count(batch[t]) for t in names})
        losses = {t: loss * scale[t] for t, loss in losses.items()}
    return losses, feats


def balancer_features(balancer: Any, model: torch.nn.Module, feats: Any) -> Any:
    """The features a balancer gets: none unless it uses them; for a method on the shared representation
    (``on="features"``) after DTME / Recon forked the backbone into task streams, the last representation
    all streams share (the tokens entering the fork), so MGDA-UB / GradDrop keep their meaning: aggregate at
    the last shared representation, everything after it is task-specific."""
    if feats is None or not getattr(balancer, "needs_features", False):
        return None
    if isinstance(feats, dict) and getattr(balancer, "on", None) == "features":
        shared = getattr(getattr(model, "backbone", None), "shared_tokens", None)
        if shared is not None:
            return [shared]
    return feats


def uses_shared_parameters(balancer: Any) -> bool:
    """Whether a balancer differentiates with respect to the shared parameters (gradient methods; FAMO
    when it clips them). Methods known to work on the losses alone say no; any other balancer yes."""
    if isinstance(balancer, JacobianAggregator):
        return balancer.on == "params"
    if isinstance(balancer, FAMO):
        return float(getattr(balancer, "max_norm", 0.0) or 0.0) > 0
    return not isinstance(balancer, WeightedSum | UncertaintyWeighting | GeometricLossStrategy)


def backward_kwargs(balancer: Any, model: torch.nn.Module, feats: Any, iteration: int,
                    reduce_jacobian: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, Any]:
    """The keyword arguments of ``balancer.backward`` besides the losses (works for any model); the
    parameter lists only for methods that use them (collecting them walks the model every step);
    ``reduce_jacobian`` when aggregators use the global Jacobian (``StepContext.reduce_jacobian``)."""
    shared = uses_shared_parameters(balancer)
    out = {
        "shared": shared_parameters(model) if shared else None,
        "features": balancer_features(balancer, model, feats),
        "last_shared": last_shared_parameters(model) if shared else None,
        "iteration": iteration,
        "model": model,
    }
    if reduce_jacobian is not None:
        out["reduce_jacobian"] = reduce_jacobian
    return out


def loss_values(losses: dict[str, torch.Tensor]) -> dict[str, float]:
    """Detached loss values as floats, read in one device transfer (one sync on an accelerator)."""
    vals = torch.stack([v.detach().reshape(()).float() for v in losses.values()]).tolist()
    return dict(zip(losses, vals, strict=True))


def all_finite(losses: dict[str, torch.Tensor]) -> bool:
    return all(math.isfinite(float(v.detach())) for v in losses.values())


def extra_backward(ctx: StepContext, feats: Any, batch: dict[str, Any], tasks: list[str]) -> None:
    """``ctx.backward_hook`` (if any) for the tasks about to be updated; call right before the balancer."""
    if ctx.backward_hook is not None:
        ctx.backward_hook(feats, batch, list(tasks), **scale_kwargs(ctx))  # fp16: scaled as the balancer's


def after_optimizer_step(ctx: StepContext) -> None:
    if ctx.after_step is not None:
        ctx.after_step()


def balanced_backward(ctx: StepContext, losses: dict[str, torch.Tensor], feats: Any) -> dict[str, Any]:
    """Zero grads, then let the balancer fill them for ``losses`` (shared / last-shared params from the model)."""
    return ctx.balancer.backward(losses, **backward_kwargs(ctx.balancer, ctx.model, feats, ctx.iteration,
                                                           ctx.reduce_jacobian),
                                 **scale_kwargs(ctx))


def scale_kwargs(ctx: StepContext) -> dict[str, Any]:
    """``{"grad_scale": scaler}`` under fp16 (the balancer sees unscaled losses and decides unscaled), else {}."""
    return {} if ctx.precision is None else ctx.precision.backward_kwargs()


def optimizer_step(ctx: StepContext) -> bool:
    """The optimizer step (through the GradScaler under fp16); False when it was skipped: the scaler's own
    overflow check under fp16, otherwise the non-finite guard on the gradients (:mod:`._guard`)."""
    clip = None
    if ctx.grad_clip is not None:
        def clip() -> None:  # after the cross-process average; a non-finite norm leaves the guard to skip
            params = [p for p in ctx.model.parameters() if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, float(ctx.grad_clip))
    if ctx.precision is None or getattr(ctx.precision, "scaler", None) is None:
        if clip is not None:
            clip()
        return guarded_step(ctx.optimizer)
    return ctx.precision.step(ctx.optimizer, clip=clip)


class Strategy(ABC):
    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    options: ClassVar[dict[str, Any]] = {}

    @abstractmethod
    def step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, Any]:
        """Run the optimizer step(s) for one batch; return info with ``"losses"`` and ``"skipped"``."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027  (stateless by default)
        """Restore what :meth:`state_dict` saved."""


STRATEGIES: Registry[type[Strategy]] = Registry("strategy")


@STRATEGIES.register("joint")
class Joint(Strategy):
    """One forward, one balanced backward, one optimizer step per batch (the usual MTL update).

    A non-finite loss skips the step (no parameter or optimizer-state change) and is counted in the log.
    """

    name = "joint"

    def step(self, batch, ctx):
        ctx.optimizer.zero_grad(set_to_none=True)
        losses, feats = compute_losses(ctx, batch)
        values = ctx.reduce_losses(loss_values(losses))
        if not all(math.isfinite(v) for v in values.values()):
            return {"losses": values, "skipped": 1, "steps": 0}
        rec = ctx.grad_stats
        pending = None if rec is None else rec.begin(losses, model=ctx.model, features=feats, iteration=ctx.iteration)
        extra_backward(ctx, feats, batch, list(losses))
        info = balanced_backward(ctx, losses, feats)
        if pending is not None:
            info["grad_stats"] = pending.finish(info)
        ctx.sync_grads()
        stepped = optimizer_step(ctx)
        after_optimizer_step(ctx)
        if getattr(ctx.balancer, "needs_post_step_losses", False) and not stepped:  # unchanged model: same losses
            ctx.balancer.post_step({t: v.detach() for t, v in losses.items()})
        elif getattr(ctx.balancer, "needs_post_step_losses", False):  # FAMO: same batch's losses after the step
            with torch.no_grad():
                after, _ = compute_losses(ctx, batch)
            ctx.balancer.post_step(after)
        info.update(losses=values, skipped=int(not stepped), steps=int(stepped))
        return info


def get(name: str, **options: Any) -> Strategy:
    from mtlkit.errors import MtlkitError

    cls = STRATEGIES.get(name)
    unknown = set(options) - set(cls.options)
    if unknown:
        raise MtlkitError(f"strategy {name!r} has no option(s) {sorted(unknown)}; valid: {sorted(cls.options)}")
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:  # a wrong type or range (e.g. ``warmup=abc`` from the command line)
        given = ", ".join(f"{k}={v!r}" for k, v in options.items())
        raise MtlkitError(f"strategy {name!r}: bad option value(s) {given} ({e}); options: "
                          f"{', '.join(f'{k} (default {v!r})' for k, v in cls.options.items())}") from e
