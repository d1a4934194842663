"""Proximal inter-task affinity (Jeong & Yoon, ICLR 2025, Sec. 3.3), tracked from loss changes.

The matrix ``A[s, t]`` (source s, target t) starts at zero. A *measurement* is the change of every task's
loss across one optimizer step of a task group G on the same batch (``pre`` = losses of the forward before
the step, ``post`` = losses of the forward after it). For each source ``s`` in G and each target ``t``:

- t not in G (inter-group): ``a = (1 - post_t / pre_t) / |G|``;
- t in G, t != s (intra-group): with ``a_t`` as above and ``a_s = (1 - post_s / pre_s) / |G|``, use ``a_t``
  when ``a_t * a_s >= 0``, else ``-max(a_t, a_s)``;
- t == s (self): update only when ``a_t >= 0``;
- then ``A[s, t] <- (1 - beta) * A[s, t] + beta * a``.

These are the rules of the official code (``form_task_affinity.update`` in sel-update-mtl's
``utils/train_utils.py``), including its guards: a target whose ``pre`` loss is not positive is skipped, and
so is an intra-group pair whose source ``pre`` loss is not positive (the ratio is undefined).

Attribution (DESIGN.md section 5, trap (a)). The strategy forwards once before every group step, so the
forward before step k is both the ``post`` of step k-1 and the ``pre`` of step k. :meth:`observe` takes
these forwards in order:

- ``"previous"`` (our default): the change between forward k-1 and forward k is credited to group k-1,
  whose step caused it. The last group's step of a batch is not measured (no extra forward is paid).
- ``"official"``: the same change is credited to group k, as the official code does (it calls
  ``update(group_k, losses_k)`` with ``pre_loss`` from the forward before group k-1's step).

Both coincide when one group is stepped twice (the single-group rule). Every forward's values must be
identical on all processes (the strategy reduces them first), so all processes hold the same matrix.
A non-finite forward is never used: the measurements that would involve it are dropped.

We keep the matrix in float64 (the official code uses a float32 tensor); the difference is rounding only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mtlkit.errors import MtlkitError

ATTRIBUTIONS = ("previous", "official")


class ProximalAffinity:
    """Stateful tracker of the proximal inter-task affinity matrix; ``state_dict`` resumes it exactly."""

    def __init__(self, tasks: Sequence[str], decay: float = 0.001, attribution: str = "previous") -> None:
        if attribution not in ATTRIBUTIONS:
            raise MtlkitError(f"affinity attribution must be one of {ATTRIBUTIONS}, got {attribution!r}")
        if not 0.0 <= float(decay) <= 1.0:
            raise MtlkitError(f"affinity decay must be in [0, 1] (paper: 0.001; Taskonomy 0.0001), got {decay!r}")
        if len(set(tasks)) != len(tasks) or not tasks:
            raise MtlkitError(f"affinity needs distinct task names, got {list(tasks)}")
        self.tasks = list(tasks)
        self.index = {t: i for i, t in enumerate(self.tasks)}
        self.decay = float(decay)
        self.attribution = attribution
        self.matrix = np.zeros((len(self.tasks), len(self.tasks)), dtype=np.float64)
        #: number of measurements applied so far (for logging / tests)
        self.measurements = 0
        self._pre: dict[str, float] | None = None
        self._pre_group: list[str] | None = None

    # -------------------------------------------------------------------------------- per batch
    def begin_batch(self) -> None:
        """Forget the last forward: measurements never span two batches (official ``init_pre_loss``)."""
        self._pre = None
        self._pre_group = None

    def observe(self, group: Sequence[str], losses: Mapping[str, float] | None) -> bool:
        """Record the forward made just before ``group``'s step (``None`` or non-finite: unusable).

        Applies the measurement between the previous forward of this batch and this one, if both are usable;
        returns whether a measurement was applied.
        """
        group = list(group)
        usable = losses is not None and all(math.isfinite(float(losses[t])) for t in self.tasks)
        applied = False
        if usable and self._pre is not None:
            credited = self._pre_group if self.attribution == "previous" else group
            self.update(credited, self._pre, losses)
            applied = True
        if usable:
            self._pre = {t: float(losses[t]) for t in self.tasks}
            self._pre_group = group
        else:
            self._pre = None
            self._pre_group = None
        return applied

    # -------------------------------------------------------------------------------- the rules
    def update(self, group: Sequence[str], pre: Mapping[str, float], post: Mapping[str, float]) -> None:
        """One measurement: ``group`` stepped once, task losses went from ``pre`` to ``post``."""
        unknown = [t for t in group if t not in self.index]
        if unknown or not group:
            raise MtlkitError(f"affinity update for unknown task(s) {unknown or group}; tasks: {self.tasks}")
        members = set(group)
        n = len(group)

        def ratio(t: str) -> float | None:
            p = float(pre[t])
            if not p > 0:  # official: `if pre_loss <= 0: continue`
                return None
            a = (1.0 - float(post[t]) / p) / n
            return a if math.isfinite(a) else None

        changes = {t: ratio(t) for t in self.tasks}
        for s in group:
            for t in self.tasks:
                a_t = changes[t]
                if a_t is None:
                    continue
                if t not in members:
                    self._apply(s, t, a_t)
                    continue
                a_s = changes[s]
                if a_s is None:
                    continue
                if t == s:
                    if a_t >= 0:
                        self._apply(s, t, a_t)
                elif a_t * a_s >= 0:
                    self._apply(s, t, a_t)
                else:
                    self._apply(s, t, -max(a_t, a_s))
        self.measurements += 1

    def _apply(self, s: str, t: str, a: float) -> None:
        i, j = self.index[s], self.index[t]
        self.matrix[i, j] = (1.0 - self.decay) * self.matrix[i, j] + self.decay * a

    # -------------------------------------------------------------------------------- views
    def rounded(self, digits: int = 5) -> list[list[float]]:
        """The matrix as nested lists with ``digits`` significant digits (compact logging)."""
        return [[float(f"{v:.{digits}g}") for v in row] for row in self.matrix.tolist()]

    def state_dict(self) -> dict[str, Any]:
        return {
            "tasks": list(self.tasks),
            "decay": self.decay,
            "attribution": self.attribution,
            "matrix": self.matrix.tolist(),
            "measurements": self.measurements,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["tasks"]) != self.tasks:
            raise MtlkitError(
                f"affinity state is for tasks {list(state['tasks'])}, this run has {self.tasks}; "
                "resume with the same tasks in the same order"
            )
        matrix = np.asarray(state["matrix"], dtype=np.float64)
        if matrix.shape != self.matrix.shape:
            raise MtlkitError(f"affinity state has shape {matrix.shape}, expected {self.matrix.shape}")
        self.matrix = matrix.copy()
        self.measurements = int(state.get("measurements", 0))
        self.begin_batch()
