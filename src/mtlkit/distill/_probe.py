"""Feature-distance probe (the imbalance study's §V.F.1, Fig. 6): how far the multi-task features stay from
each single-task network's features during training.

The study: "we first trained an STL model, and when training the MTL model, we updated the adaptor by
calculating the feature differences between the STL and MTL (we use the L2 function to compute the distance
as in [URL])". So a probe adaptor per task (URL's adaptor and distance) is trained alongside the run against
the frozen single-task features; the logged distance is the quantity of Fig. 6.

The probe only reads **detached** multi-task features and differentiates with respect to its own adaptors
only: the multi-task model, its gradients and its optimizer never see it. It draws its init from its own
``torch.Generator`` and nothing else is random, so a run with the probe trains bit-identical weights to the
same run without it. Our choices (the study gives none): the adaptors' optimizer is URL's (Adam, lr 1e-2,
weight decay 5e-4), with a constant learning rate; the distance of a step is measured before that step's
adaptor update (as the official URL log, ``nyu_url.py`` lines 196-197 then 217-221).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from mtlkit.distill._bank import AdaptorBank, Channels
from mtlkit.distill._distiller import OFFICIAL_LR, OFFICIAL_WEIGHT_DECAY
from mtlkit.distill._features import DEFAULT_SELECT, Select, select_features
from mtlkit.errors import MtlkitError

#: the log key the trainer writes the probe's distances under (one ``{task: distance}`` per logged row)
LOG_KEY = "feature_distance"


class FeatureDistanceProbe(AdaptorBank):
    """Per-task probe adaptors trained on detached student features; ``history`` holds ``(iteration,
    {task: distance})`` for every probed step.

    Per training step (after the model's forward, any time before the next one)::

        if probe.due(iteration):
            probe.step(feats, x, iteration=iteration)      # or teacher_features=distiller.teacher_features(x)
    """

    def __init__(
        self,
        teachers: Mapping[str, nn.Module],
        student_channels: Channels,
        teacher_channels: int | Mapping[str, int],
        *,
        select: Select = DEFAULT_SELECT,
        lr: float = OFFICIAL_LR,
        weight_decay: float = OFFICIAL_WEIGHT_DECAY,
        every: int = 1,
        seed: int = 0,
    ) -> None:
        if int(every) < 1:
            raise MtlkitError(f"feature-distance probe 'every' must be >= 1 (iterations), got {every}")
        if not lr > 0 or not weight_decay >= 0:
            raise MtlkitError(f"probe lr must be > 0 and weight_decay >= 0, got lr={lr} wd={weight_decay}")
        gen = torch.Generator().manual_seed(int(seed))  # its own: the global generator is never drawn from
        super().__init__(teachers, student_channels, teacher_channels, select=select, generator=gen)
        self.every = int(every)
        self.optimizer = torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)
        self.history: list[tuple[int, dict[str, float]]] = []

    @classmethod
    def from_example(
        cls, teachers: Mapping[str, nn.Module], student_features: Any, inputs: Any, *,
        select: Select = DEFAULT_SELECT, **kwargs: Any,
    ) -> FeatureDistanceProbe:
        """Build with the channel counts read off one batch (as :meth:`URLDistiller.from_example`)."""
        sc, tc = cls.channels_from_example(teachers, student_features, inputs, select)
        return cls(teachers, sc, tc, select=select, **kwargs)

    def due(self, iteration: int) -> bool:
        return int(iteration) % self.every == 0

    def step(
        self, student_features: Any, inputs: Any = None, *,
        teacher_features: Mapping[str, torch.Tensor] | None = None, iteration: int | None = None,
        sync_grads: Callable[[list[nn.Parameter]], None] | None = None,
    ) -> dict[str, float]:
        """Measure ``{task: distance}`` on this batch, then update the probe adaptors once; logs and returns it.

        ``sync_grads``: called with the probe's parameters (gradients filled) before its step; under torchrun
        the engine passes its gradient all-reduce so the probes of all processes stay equal (the logged
        distances are this process's; the engine averages them for the log)."""
        picked = {t: [f.detach() for f in select_features(student_features, self.select, t)] for t in self.tasks}
        if teacher_features is None:
            if inputs is None:
                raise MtlkitError("the feature-distance probe needs the inputs (for the teachers) or teacher features")
            teacher_features = self.teacher_features(inputs)
        params = self.parameters()
        with torch.enable_grad():
            d = self.distances_of(picked, teacher_features=teacher_features)
            total = sum(d.values())
            grads = torch.autograd.grad(total, params)  # only the probe's own parameters
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        if sync_grads is not None:
            sync_grads(params)
        self.optimizer.step()
        self.zero_grad()
        out = {t: float(v.detach()) for t, v in d.items()}
        self.history.append((len(self.history) if iteration is None else int(iteration), out))
        return out

    def final(self, window: int = 50) -> dict[str, float]:
        """Mean distance per task over the last ``window`` probed steps (``metrics.json``; {} before any)."""
        rows = [d for _, d in self.history[-max(1, int(window)):]]
        return {t: sum(r[t] for r in rows) / len(rows) for t in self.tasks} if rows else {}

    def curves(self) -> dict[str, list[tuple[int, float]]]:
        """``{task: [(iteration, distance), ...]}`` over the run (for the curve form of Fig. 6)."""
        return {t: [(i, d[t]) for i, d in self.history] for t in self.tasks}

    def state_dict(self) -> dict[str, Any]:
        """Adaptors, optimizer and history (never the teachers)."""
        return {
            "tasks": list(self.tasks),
            "adaptors": self.adaptors.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "history": [(i, dict(d)) for i, d in self.history],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state.get("tasks", self.tasks)) != self.tasks:
            raise MtlkitError(f"probe state is for tasks {state.get('tasks')}, this run probes {self.tasks}")
        self.adaptors.load_state_dict(state["adaptors"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.history = [(int(i), dict(d)) for i, d in state.get("history", [])]

