"""URL (Li, Liu & Bilen, "Universal Representations", IJCV 2023): distil frozen single-task features into
the shared multi-task encoder through per-task adaptors.

Everything here follows the official code, VICO-UoE/UniversalRepresentations ``DensePred/nyu_url.py``:

- teachers: the single-task networks of each task, loaded from their best checkpoint (lines 96-100), their
  last feature (``single_model[i].embed(x)[-1]``) computed without gradient (lines 182-187);
- adaptors: one per task, bias-free 1x1 convolutions, Xavier-normal init (lines 50-69, 100), see
  :class:`~mtlkit.distill.URLAdaptor`; the distance: :func:`~mtlkit.distill.url_distance` (lines 186-195);
- per-task weights λ = (1, 1, 2) for (semantic, depth, normal) (lines 35, 200-201), i.e. mtlkit's
  ``semseg``, ``depth``, ``normals``: :data:`OFFICIAL_WEIGHTS`;
- the adaptors' own optimizer, ``Adam(lr=1e-2, weight_decay=5e-4)`` (``--alr`` default, lines 30, 111-113), and
  schedule, ``CosineAnnealingLR(T_max=200)`` over the 200 training epochs, stepped once per epoch (lines 110,
  114, 290) — the student keeps its own optimizer (``Adam(1e-4)`` + ``StepLR``, lines 102-106);
- the distillation loss joins **after** the task weighting: ``loss = weighting(task losses) + Σ_t λ_t D_t``
  (lines 201-215), one backward, then both optimizers step (lines 217-221). The balancer therefore sees only
  the task losses; :func:`backward_with_distillation` does that for any mtlkit balancer, gradient
  aggregators included (the distillation gradient is added to the balancer's update).

Our choices, said once: tasks the official code does not have (e.g. ``edge``) get λ = 1; the cosine schedule
runs over the trainer's scheduler steps (``total_steps``; mtlkit steps per iteration, the official code per
epoch: same curve, smooth instead of a staircase), constant when ``total_steps`` is None; the teachers are
in eval mode. The official script never calls ``.eval()`` on them (lines 96-100), so there the teachers'
BatchNorm layers normalise with batch statistics and keep updating their running statistics during URL
training; we freeze them fully (trained statistics, unchanged bytes), which is what "frozen teacher" means.
"""

from __future__ import annotations

import math
import warnings
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from mtlkit.distill._bank import AdaptorBank, Channels
from mtlkit.distill._features import DEFAULT_SELECT, Select
from mtlkit.errors import MtlkitError

#: λ_t of the official NYUv2 script (``nyu_url.py`` line 200: ``lambda_ = [1, 1, 2]`` over
#: ``['semantic', 'depth', 'normal']``, line 35), under mtlkit's task names; other tasks get 1.
OFFICIAL_WEIGHTS: dict[str, float] = {"semseg": 1.0, "depth": 1.0, "normals": 2.0}
_ALIASES = {"semantic": "semseg", "normal": "normals"}  # the official script's names
#: adaptor optimizer and schedule (``nyu_url.py`` lines 30, 110-114)
OFFICIAL_LR = 1e-2
OFFICIAL_WEIGHT_DECAY = 5e-4
OFFICIAL_EPOCHS = 200
#: how many recent steps :meth:`URLDistiller.final` averages (our choice)
RECENT = 50

#: ``mtlkit methods`` entry (registered by the trainer phase)
PAPER = "Li, Liu & Bilen, Universal Representations: A Unified Look at Multiple Task and Domain Learning, IJCV 2023"
OPTIONS: dict[str, Any] = {
    "weights": "official",
    "lr": OFFICIAL_LR,
    "weight_decay": OFFICIAL_WEIGHT_DECAY,
    "schedule": "cosine",
    "feature": None,
}


def resolve_weights(tasks: list[str], weights: str | Mapping[str, float] | None = "official") -> dict[str, float]:
    """λ per task: ``"official"`` (:data:`OFFICIAL_WEIGHTS`, others 1), ``"equal"`` (all 1), or a dict that
    overrides the official values for the tasks it names (the official script's names are accepted)."""
    if weights is None or weights == "official":
        given: dict[str, float] = {}
    elif weights == "equal":
        return dict.fromkeys(tasks, 1.0)
    elif isinstance(weights, Mapping):
        given = {}
        for k, v in weights.items():
            name = k if k in tasks else _ALIASES.get(k, k)
            if name not in tasks:
                raise MtlkitError(f"URL weight given for unknown task {k!r}; tasks: {tasks}")
            try:
                given[name] = float(v)
            except (TypeError, ValueError):
                raise MtlkitError(f"URL weight of task {k!r} must be a number, got {v!r}") from None
            if not given[name] >= 0:
                raise MtlkitError(f"URL weight of task {k!r} must be >= 0, got {v!r}")
    else:
        raise MtlkitError(f"URL weights must be 'official', 'equal' or {{task: weight}}, got {weights!r}")
    return {t: given.get(t, OFFICIAL_WEIGHTS.get(t, 1.0)) for t in tasks}


class URLDistiller(AdaptorBank):
    """URL distillation state: frozen teachers, per-task adaptors, λ, the adaptors' optimizer and schedule.

    Use per training step (the trainer's order, as ``nyu_url.py`` lines 174-221)::

        distiller.zero_grad()                                  # with optimizer.zero_grad()
        out, feats = model(x, return_features=True)            # feats: what forward_features returned
        total, dist = distiller.loss(feats, x)                 # Σ_t λ_t D_t, {task: D_t}
        info = backward_with_distillation(balancer, losses, total, shared=..., features=...)
        optimizer.step(); distiller.step()
        distiller.schedule_step()                              # once per scheduler step (total_steps of them)

    ``teachers``: ``{task: module}`` mapping inputs to features (wrap a single-task model in
    :class:`~mtlkit.distill.FeatureExtractor`); they are frozen here and never saved by :meth:`state_dict`.
    ``student_channels`` / ``teacher_channels``: channel counts (or use :meth:`from_example`).
    ``select``: the student feature(s) to distil (see :mod:`mtlkit.distill._features`).
    """

    def __init__(
        self,
        teachers: Mapping[str, nn.Module],
        student_channels: Channels,
        teacher_channels: int | Mapping[str, int],
        *,
        weights: str | Mapping[str, float] | None = "official",
        lr: float = OFFICIAL_LR,
        weight_decay: float = OFFICIAL_WEIGHT_DECAY,
        total_steps: int | None = None,
        select: Select = DEFAULT_SELECT,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(teachers, student_channels, teacher_channels, select=select, generator=generator)
        if not lr > 0 or not weight_decay >= 0:
            raise MtlkitError(f"URL adaptor lr must be > 0 and weight_decay >= 0, got lr={lr} wd={weight_decay}")
        if total_steps is not None and int(total_steps) < 1:
            raise MtlkitError(f"URL total_steps must be >= 1 (the scheduler steps of the run), got {total_steps}")
        self.weights = resolve_weights(self.tasks, weights)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.scheduler: torch.optim.lr_scheduler.LRScheduler | None = (
            torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.total_steps)
            if self.total_steps is not None else None
        )
        self.last: dict[str, float] = {}
        self.recent: deque[dict[str, float]] = deque(maxlen=RECENT)

    @classmethod
    def from_example(
        cls, teachers: Mapping[str, nn.Module], student_features: Any, inputs: Any, *,
        select: Select = DEFAULT_SELECT, **kwargs: Any,
    ) -> URLDistiller:
        """Build with the channel counts read off one batch (``student_features`` as ``forward_features``
        returned them; ``inputs`` for the teachers). Consumes no randomness beyond the adaptors' init."""
        sc, tc = cls.channels_from_example(teachers, student_features, inputs, select)
        return cls(teachers, sc, tc, select=select, **kwargs)

    def loss(
        self, student_features: Any, inputs: Any = None, *, teacher_features: Mapping[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``(Σ_t λ_t D_t, {task: D_t})``: the differentiable total and the per-task distances (for the log).

        Give ``inputs`` (the teachers run on them) or ``teacher_features`` (``{task: feature}``, e.g. shared
        with the feature-distance probe via :meth:`teacher_features`)."""
        d = self.distances(student_features, inputs, teacher_features)
        total = sum(self.weights[t] * d[t] for t in self.tasks)  # nyu_url.py lines 200-201
        self.last = {t: float(v.detach()) for t, v in d.items()}
        self.recent.append(dict(self.last))
        return total, dict(self.last)

    def final(self) -> dict[str, float]:
        """Mean distance per task over the last :data:`RECENT` calls of :meth:`loss` (``metrics.json``)."""
        rows = list(self.recent)
        return {t: sum(r[t] for r in rows) / len(rows) for t in self.tasks} if rows else {}

    def step(self, sync_grads: Callable[[list[nn.Parameter]], None] | None = None) -> None:
        """The adaptors' optimizer step (after the student's, ``nyu_url.py`` lines 220-221).

        ``sync_grads``: called with the adaptors' parameters before the step; under torchrun the engine passes
        its gradient all-reduce (``mtlkit.engine._distributed.average_gradients``) so every process keeps
        the same adaptors."""
        if sync_grads is not None:
            sync_grads(self.parameters())
        self.optimizer.step()

    def schedule_step(self) -> None:
        """Advance the adaptors' cosine schedule by one of its ``total_steps`` (no-op without one)."""
        if self.scheduler is not None:
            self.scheduler.step()

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def train(self, mode: bool = True) -> URLDistiller:
        """Adaptors only (1x1 convolutions: no mode-dependent layers); teachers stay in eval mode."""
        self.adaptors.train(mode)
        return self

    def state_dict(self) -> dict[str, Any]:
        """What an exact resume needs: adaptors, optimizer, schedule, λ. Never the teachers (they are rebuilt
        from the cached single-task checkpoints)."""
        return {
            "tasks": list(self.tasks),
            "weights": dict(self.weights),
            "adaptors": self.adaptors.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "recent": [dict(r) for r in self.recent],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state.get("tasks", self.tasks)) != self.tasks:
            raise MtlkitError(f"URL state is for tasks {state.get('tasks')}, this run distils {self.tasks}")
        self.weights = dict(state.get("weights", self.weights))
        self.adaptors.load_state_dict(state["adaptors"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.recent = deque((dict(r) for r in state.get("recent", [])), maxlen=RECENT)


def backward_with_distillation(
    balancer: Any, losses: Mapping[str, torch.Tensor], distill_loss: torch.Tensor | None, **balancer_kwargs: Any
) -> dict[str, Any]:
    """Back-propagate ``balancer(task losses) + distill_loss``: the balancer sees only the task losses.

    This is the official order (``nyu_url.py`` lines 201-219: the weighting is computed from the task
    losses alone, then ``loss = loss + dist_loss`` and one backward). Gradients add, so the distillation
    loss is back-propagated first, keeping the graph, and the balancer's backward (which frees it)
    accumulates its update on top: the result is ``g_balancer + ∇ Σ_t λ_t D_t`` for weightings and
    aggregators alike (an aggregator never sees the distillation gradient). Returns the balancer's info with
    ``"distill_loss"`` added. A non-finite distillation loss is left out of the step (warning, and
    ``"distill_nonfinite": 1`` in the info) so that it cannot corrupt the student.
    """
    value = None if distill_loss is None else float(distill_loss.detach())
    skipped = value is not None and not math.isfinite(value)
    if skipped:
        warnings.warn(f"URL distillation loss is {value}; left out of this step", RuntimeWarning, stacklevel=2)
    elif distill_loss is not None and distill_loss.requires_grad:
        distill_loss.backward(retain_graph=True)
    info = dict(balancer.backward(dict(losses), **balancer_kwargs) or {})
    if value is not None:
        info["distill_loss"] = value
    if skipped:
        info["distill_nonfinite"] = 1
    return info
