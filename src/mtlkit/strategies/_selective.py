"""Selective task group updates (Jeong & Yoon, "Selective Task Group Updates for Multi-Task Optimization",
ICLR 2025; official code wooseong97/sel-update-mtl, ``train_phase_affinity`` in ``utils/train_utils.py``).

Per batch the tasks are partitioned into K groups, updated one after another on the same batch: for each
group G, forward the whole model (all task losses), zero the gradients (to ``None``, so heads outside G
keep ``grad=None`` and Adam/AdamW leave them and their state untouched), back-propagate G's losses through
the balancer, and take an optimizer step. K groups give K forwards, K backwards and K optimizer steps; the
trainer steps the LR scheduler once per batch. The forwards also feed the proximal inter-task affinity
(:mod:`._affinity`), from which the next batch's groups are clustered (:mod:`._grouping`).

One behaviour of the official code is not the default: there ``optimizer.zero_grad()`` (torch 1.13, which
fills zeros) and DDP with ``find_unused_parameters=True`` give the heads outside G zero gradients
(``utils/train_utils.py`` L143-150, ``main.py`` L90), so Adam still steps them from their moments (AdamW
also decays them). ``unused_grads="zeros"`` reproduces that; the default ``"none"`` follows the paper's
text (only G's tasks are updated).

Behaviour of the official code that we match:

- warm-up (``grouping="affinity"`` only): singleton groups in random order for the first ``warmup + 1``
  batches, 101 by default (the official test is ``iter_count <= prepos`` with ``iter_count`` counted from
  0 and ``prepos: 100``); the affinity is tracked during warm-up too;
- afterwards the groups are re-clustered before every batch and updated in random order;
- single-group rule: when the clustering gives one group, it is stepped twice on the batch so that the
  affinity keeps being measured (``train_group = train_group * 2``); ``double_single=False`` turns it off;
- the loss of a group is ``sum(lambda_t * L_t for t in G)`` (equal weights in the official configs;
  ``group_norm=True`` divides it by ``|G|``, the official ``group_norm`` flag, off in its configs);
- decay 0.001 (0.0001 in the official Taskonomy config).

Where we differ or add (each an option): ``attribution`` ("previous", our default, credits the group whose
step changed the losses; "official" reproduces the code, see :mod:`._affinity`); the groupings of the
paper's ablations (``grouping="joint"`` one group and one step per batch, never doubled, which is plain
joint training; ``"separate"`` every task alone; ``"random"`` with ``group_size`` or ``num_groups``); the
update order (``order="random" | "forward" | "backward"``, paper Tab. 4).

Task-specific learning rate: the official NYUD and PASCAL configs set ``lr_ts: True``, i.e. the heads' LR
is ``lr * T`` (x4 on NYUD, x5 on PASCAL-Context); the Taskonomy config leaves it off (x1). The trainer
implements this as ``lr_ts`` (a multiplier of the task-specific parameter group's LR).

Balancing inside a group: the balancer only ever sees the group's losses. A group holding every task uses
``ctx.balancer`` itself (so ``grouping="joint"`` is exactly the joint strategy). Every other group gets its
own balancer instance, made once per distinct group and kept (with its state) for the rest of the run:
by ``balancer_factory(tasks)`` if set; else by ``balancing.get(method, tasks=group, **options)`` after
:meth:`Selective.configure_balancer` (the trainer calls it; ``fixed`` keeps the group's weights); else, for
use outside the trainer, by copying ``ctx.balancer`` as it was before its first use and restricting it to
the group's tasks (fine for methods that size their state lazily; FAMO needs one of the first two).
A group balancer with learnable parameters (UW, GradNorm, IMTL) has its own, added to the trainer's
optimizer and checkpoint through ``ctx.add_parameters`` when the group first appears (and rebuilt in the
same order on resume, :meth:`Selective.prepare`). A single-task group of a gradient aggregator steps on
its own loss (the aggregate of one gradient is that gradient; Nash-MTL cannot be posed for one task).
A balancer that wants its post-step losses (FAMO) gets them from
the next group's forward on the same batch, or from one extra forward after the last group. Gradient
statistics (``ctx.grad_stats``) are taken at the batch's first forward for all tasks, against the first
group's update.

Distributed: the values that feed the affinity go through ``ctx.reduce_losses`` and the random order and
random groupings come from the strategy's own generator seeded identically on every process (``seed``;
default ``torch.initial_seed()`` at the first batch), so every process forms the same groups.
A forward with any non-finite task loss skips that group's step (as the joint strategy skips its step)
and is never used for the affinity.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from typing import Any

import torch

from mtlkit.balancing import Equal, Fixed
from mtlkit.errors import MtlkitError
from mtlkit.strategies._affinity import ATTRIBUTIONS, ProximalAffinity
from mtlkit.strategies._base import (
    STRATEGIES,
    StepContext,
    Strategy,
    after_optimizer_step,
    backward_kwargs,
    compute_losses,
    extra_backward,
    optimizer_step,
    scale_kwargs,
)
from mtlkit.strategies._grouping import (
    ORDERS,
    Groups,
    affinity_groups,
    canonical,
    joint_groups,
    order_groups,
    random_groups,
    separate_groups,
)

GROUPINGS = ("affinity", "joint", "separate", "random")


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        return value.lower() in ("true", "1", "yes", "on")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise MtlkitError(f"strategy option {name} must be true or false, got {value!r}")


def _as_int(value: Any, name: str, minimum: int) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        out = None
    if out is None or out != float(value) or out < minimum:
        raise MtlkitError(f"strategy option {name} must be an integer >= {minimum}, got {value!r}")
    return out


@STRATEGIES.register("selective")
class Selective(Strategy):
    """K sequential group updates per batch with groups clustered from proximal inter-task affinity."""

    name = "selective"
    paper = "Jeong & Yoon, Selective Task Group Updates for Multi-Task Optimization, ICLR 2025"
    options = {
        "grouping": "affinity",
        "order": "random",
        "decay": 0.001,
        "attribution": "previous",
        "warmup": 100,
        "double_single": True,
        "group_size": None,
        "num_groups": None,
        "preference": None,
        "convergence_iter": 50,
        "group_norm": False,
        "unused_grads": "none",
        "seed": None,
    }
    #: shown by ``mtlkit methods``: the official recipes' settings that are not defaults
    notes = ("official recipes: lr_ts (task-specific LR x T) x4 on NYUD-v2, x5 on PASCAL-Context, x1 on "
             "Taskonomy; decay 1e-4 on Taskonomy (1e-3 elsewhere); unused_grads=zeros is the code's behaviour")

    def __init__(
        self,
        grouping: str = "affinity",
        order: str = "random",
        decay: float = 0.001,
        attribution: str = "previous",
        warmup: int = 100,
        double_single: bool = True,
        group_size: int | None = None,
        num_groups: int | None = None,
        preference: float | None = None,
        convergence_iter: int = 50,
        group_norm: bool = False,
        unused_grads: str = "none",
        seed: int | None = None,
    ) -> None:
        if grouping not in GROUPINGS:
            raise MtlkitError(f"selective grouping must be one of {GROUPINGS}, got {grouping!r}")
        if order not in ORDERS:
            raise MtlkitError(f"selective order must be one of {ORDERS}, got {order!r}")
        if attribution not in ATTRIBUTIONS:
            raise MtlkitError(f"selective attribution must be one of {ATTRIBUTIONS}, got {attribution!r}")
        try:
            decay = float(decay)
        except (TypeError, ValueError):
            decay = float("nan")
        if not 0.0 <= decay <= 1.0:
            raise MtlkitError(f"selective decay must be a number in [0, 1] (paper 0.001), got {decay!r}")
        if grouping == "random":
            if (group_size is None) == (num_groups is None):
                raise MtlkitError("grouping=random needs exactly one of group_size=K or num_groups=K")
            group_size = None if group_size is None else _as_int(group_size, "group_size", 1)
            num_groups = None if num_groups is None else _as_int(num_groups, "num_groups", 1)
        elif group_size is not None or num_groups is not None:
            raise MtlkitError("group_size / num_groups only apply to grouping=random")
        self.grouping = grouping
        self.order = order
        self.decay = decay
        self.attribution = attribution
        self.warmup = _as_int(warmup, "warmup", 0)
        self.double_single = _as_bool(double_single, "double_single")
        self.group_size = group_size
        self.num_groups = num_groups
        self.preference = None if preference is None else float(preference)
        self.convergence_iter = _as_int(convergence_iter, "convergence_iter", 1)
        self.group_norm = _as_bool(group_norm, "group_norm")
        if unused_grads not in ("none", "zeros"):
            raise MtlkitError(f"selective unused_grads must be 'none' (paper) or 'zeros' (official code), "
                              f"got {unused_grads!r}")
        self.unused_grads = unused_grads
        self.seed = None if seed is None else _as_int(seed, "seed", 0)
        #: optional ``fn(tasks) -> Balancer`` for the balancer of a proper sub-group (overrides the next)
        self.balancer_factory: Callable[[list[str]], Any] | None = None
        #: ``(method, options)`` for sub-group balancers, set by :meth:`configure_balancer`
        self.balancer_spec: tuple[str, dict[str, Any]] | None = None

        self.tasks: list[str] | None = None
        self.affinity: ProximalAffinity | None = None
        self.groups: Groups | None = None  # the current partition (kept when clustering fails)
        self.batches = 0  # batches done (the official `iter_count`)
        self._rng: random.Random | None = None
        self._template: Any = None
        self._balancers: dict[str, Any] = {}
        self._pending_balancer_states: dict[str, Any] = {}
        self._template_state: dict[str, Any] | None = None
        self._announced = False

    # ------------------------------------------------------------------------------------ setup
    def _setup(self, ctx: StepContext) -> None:
        tasks = list(ctx.tasks)
        if self.tasks is None:
            self.tasks = tasks
        elif self.tasks != tasks:
            raise MtlkitError(f"selective strategy set up for tasks {self.tasks}, the step has {tasks}")
        if self.affinity is None:
            self.affinity = ProximalAffinity(tasks, self.decay, self.attribution)
        if self.groups is None:
            self.groups = separate_groups(tasks)
        if self._rng is None:
            self._rng = random.Random(torch.initial_seed() if self.seed is None else self.seed)
        if self._template is None:
            self._template = copy.deepcopy(ctx.balancer)
            if self._template_state is not None:  # resumed: the balancer as it was before its first use
                self._template.load_state_dict(self._template_state)

    # ------------------------------------------------------------------------------------ grouping
    def partition(self) -> tuple[Groups, str]:
        """This batch's groups (canonical order) and how they were formed."""
        assert self.tasks is not None and self.affinity is not None and self._rng is not None
        tasks = self.tasks
        if self.grouping == "joint":
            return joint_groups(tasks), "joint"
        if self.grouping == "separate":
            return separate_groups(tasks), "separate"
        if self.grouping == "random":
            return random_groups(tasks, self._rng, size=self.group_size, count=self.num_groups), "random"
        if self.batches <= self.warmup:
            self.groups = separate_groups(tasks)
            return self.groups, "warmup"
        found = affinity_groups(
            self.affinity.matrix, tasks, preference=self.preference, convergence_iter=self.convergence_iter
        )
        if found is None:
            return self.groups, "kept"
        self.groups = found
        return found, "affinity"

    # ------------------------------------------------------------------------------------ balancers
    def configure_balancer(self, method: str, options: dict[str, Any] | None = None) -> None:
        """Build each sub-group's balancer as ``balancing.get(method, tasks=group, **options)`` (the trainer
        calls this with its ``--method`` and ``--method-opt``); ``fixed`` keeps the group's weights."""
        self.balancer_spec = (str(method), dict(options or {}))

    def _new_balancer(self, group: list[str]) -> Any:
        if self.balancer_factory is not None:
            return self.balancer_factory(list(group))
        if self.balancer_spec is not None:
            from mtlkit import balancing

            method, options = self.balancer_spec
            if isinstance(options.get("weights"), dict):  # fixed weights name every task
                options = {**options, "weights": {t: w for t, w in options["weights"].items() if t in group}}
            return balancing.get(method, tasks=list(group), **options)
        sized = [k for k, v in self._template.state_dict().items()
                 if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == len(self.tasks)]
        if sized:
            raise MtlkitError(
                f"method {getattr(self._template, 'name', '?')!r} keeps per-task state ({', '.join(sized)}) that "
                "cannot be restricted to a task group; call Selective.configure_balancer(method, options) or set "
                "balancer_factory (the trainer does the former)"
            )
        balancer = copy.deepcopy(self._template)
        balancer.tasks = list(group)
        if isinstance(balancer, Fixed):  # its weights name every task; keep the group's
            balancer.fixed = {t: w for t, w in balancer.fixed.items() if t in group}
        return balancer

    def _scaled(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.group_norm:
            return losses
        return {t: v / len(losses) for t, v in losses.items()}

    def _balancer_for(self, group: list[str], ctx: StepContext) -> Any:
        if set(group) == set(self.tasks):
            return ctx.balancer
        key = "+".join(group)
        balancer = self._balancers.get(key)
        if balancer is None:
            if len(group) == 1 and getattr(ctx.balancer, "kind", "") == "gradient aggregation":
                # an aggregate of one gradient is that gradient (up to the scale some methods add; Nash-MTL's
                # bargaining problem cannot even be posed for one task): a single task steps on its own loss
                balancer = Equal(list(group))
            else:
                balancer = self._new_balancer(group)
            setup = getattr(balancer, "setup", None)  # e.g. DWA's one-epoch window, as the trainer does
            if callable(setup):
                setup(epoch_iters=ctx.epoch_iters)
            params = list(balancer.parameters())
            if params:  # e.g. UW / GradNorm / IMTL: the group's own parameters join the optimizer
                if ctx.add_parameters is None:
                    raise MtlkitError(
                        f"method {getattr(balancer, 'name', type(balancer).__name__)!r} learns parameters per task "
                        "group; outside mtlkit.Trainer pass StepContext(add_parameters=fn) that adds them to the "
                        "optimizer (fn(params, name))"
                    )
                ctx.add_parameters(params, f"balancer:{key}")
            if key in self._pending_balancer_states:
                balancer.load_state_dict(self._pending_balancer_states.pop(key))
            self._balancers[key] = balancer
        return balancer

    def prepare(self, ctx: StepContext) -> None:
        """Rebuild, in their original order, the task-group balancers of a restored state (and register their
        parameters), so the optimizer's saved parameter groups match; the trainer calls it on resume."""
        if self.tasks is None:
            return
        self._setup(ctx)
        for key in list(self._pending_balancer_states):
            self._balancer_for(key.split("+"), ctx)

    # ------------------------------------------------------------------------------------ the step
    def step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, Any]:
        self._setup(ctx)
        partition, grouped_by = self.partition()
        ordered = order_groups(partition, self.order, self._rng)
        doubled = self.grouping == "affinity" and len(ordered) == 1 and self.double_single
        schedule = ordered * 2 if doubled else ordered
        model = ctx.model
        self.affinity.begin_batch()

        first: dict[str, float] | None = None
        weights: dict[str, float] = {}
        grad_stats = None
        pending: tuple[Any, list[str]] | None = None  # a balancer waiting for its post-step losses (FAMO)
        steps = skipped = 0
        for group in schedule:
            ctx.optimizer.zero_grad(set_to_none=True)
            losses, feats = compute_losses(ctx, batch)
            values = ctx.reduce_losses({t: float(v.detach()) for t, v in losses.items()})
            if first is None:
                first = values
            finite = all(math.isfinite(v) for v in values.values())
            self.affinity.observe(group, values if finite else None)
            if pending is not None:  # this forward is the previous group's "after the step" on the same batch
                if finite:
                    pending[0].post_step(self._scaled({t: losses[t].detach() for t in pending[1]}))
                pending = None
            if not finite:
                skipped += 1
                continue
            rec = ctx.grad_stats if steps == 0 and grad_stats is None else None
            stats = None if rec is None else rec.begin(losses, model=model, features=feats, iteration=ctx.iteration)
            balancer = self._balancer_for(group, ctx)
            extra_backward(ctx, feats, batch, group)  # e.g. URL: the group's distillation, added after the balancer
            info = balancer.backward(
                self._scaled({t: losses[t] for t in group}),
                **backward_kwargs(balancer, model, feats, ctx.iteration, ctx.reduce_jacobian),
                **scale_kwargs(ctx),
            )
            if stats is not None:  # all tasks' gradients at the batch start vs the first group's update
                grad_stats = {**stats.finish(info), "update_group": list(group)}
            if self.unused_grads == "zeros":  # the official code: parameters outside the group get zeros
                for p in model.parameters():
                    if p.requires_grad and p.grad is None:
                        p.grad = torch.zeros_like(p)
            ctx.sync_grads()
            if not optimizer_step(ctx):  # fp16 overflow, skipped by the GradScaler: no step to measure
                skipped += 1
                self.affinity.begin_batch()
                if getattr(balancer, "needs_post_step_losses", False):  # unchanged model: the same losses
                    balancer.post_step(self._scaled({t: losses[t].detach() for t in group}))
                continue
            after_optimizer_step(ctx)
            steps += 1
            weights.update({t: float(w) for t, w in (info or {}).get("weights", {}).items()})
            if getattr(balancer, "needs_post_step_losses", False):
                pending = (balancer, list(group))
        if pending is not None:  # the last group's step: one more forward, as the joint strategy does
            with torch.no_grad():
                after, _ = compute_losses(ctx, batch)
            pending[0].post_step(self._scaled({t: after[t] for t in pending[1]}))
        self.batches += 1

        out: dict[str, Any] = {
            "losses": first,
            "weights": {t: weights[t] for t in self.tasks if t in weights},
            "groups": [list(g) for g in ordered],
            "grouped_by": grouped_by,
            "affinity": self.affinity.rounded(5),
            "steps": steps,
            "skipped": skipped,
        }
        if grad_stats is not None:
            out["grad_stats"] = grad_stats
        if not self._announced:  # the matrix's row/column order, once per process start
            out["affinity_tasks"] = list(self.tasks)
            self._announced = True
        return out

    # ------------------------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        rng = None
        if self._rng is not None:
            version, internal, gauss = self._rng.getstate()
            rng = [version, list(internal), gauss]
        balancers = dict(self._pending_balancer_states)
        balancers.update({k: b.state_dict() for k, b in self._balancers.items()})
        return {
            "tasks": self.tasks,
            "batches": self.batches,
            "groups": self.groups,
            "rng": rng,
            "affinity": None if self.affinity is None else self.affinity.state_dict(),
            "balancers": balancers,
            "balancer_template": self._template.state_dict() if self._template is not None else self._template_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tasks = None if state.get("tasks") is None else list(state["tasks"])
        self.batches = int(state.get("batches", 0))
        self.groups = None if state.get("groups") is None else [list(g) for g in state["groups"]]
        if state.get("rng") is not None:
            version, internal, gauss = state["rng"]
            self._rng = random.Random()
            self._rng.setstate((int(version), tuple(int(v) for v in internal), gauss))
        if state.get("affinity") is not None:
            self.affinity = ProximalAffinity(state["affinity"]["tasks"], self.decay, self.attribution)
            self.affinity.load_state_dict(state["affinity"])
        self._balancers = {}
        self._pending_balancer_states = dict(state.get("balancers") or {})
        self._template = None
        self._template_state = state.get("balancer_template")
        if self.tasks is not None and self.groups is not None:
            self.groups = canonical(self.groups, self.tasks)

