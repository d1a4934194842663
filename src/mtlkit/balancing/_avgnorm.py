"""AvgNorm (revisit-imbalance-optimization paper, Eq. 6): scale each task loss by S / ||g_i||."""

from __future__ import annotations

import math

from mtlkit.balancing._base import BALANCERS
from mtlkit.balancing._gradweighting import GradientLossWeighting


@BALANCERS.register("avgnorm")
class AvgNorm(GradientLossWeighting):
    """w_i = S / ||g_i||, S = ||Σ_i g_i||, g_i = ∇_θ L_i for θ the last shared layer (``params="last"``,
    default: the paper finds it sufficient) or all shared parameters (``params="all"``). Weights are
    detached and recomputed every step; the update is ∇ Σ_i w_i L_i (DESIGN.md section 4).

    Guards (ours): a task whose gradient norm is below ``eps`` gets weight 1 (its gradient cannot be
    rescaled), a task with a non-finite gradient gets weight 0 for that step, and S is taken over the
    finite rows. The running average of the weights over training (the paper's Tab. VI / VII) is
    :meth:`average_weights` (also in :meth:`report`, which the trainer writes to ``metrics.json``), and
    every step's weights are in the log. No official code is public: the reference is the paper's Eq. 6.
    """

    name = "avgnorm"
    paper = "Revisiting imbalance in MTL optimisation (AvgNorm), Eq. 6"
    options = {"params": "last", "eps": 1e-8, "chunk_size": None}

    def __init__(self, tasks=None, params: str = "last", eps: float = 1e-8, chunk_size: int | None = None) -> None:
        super().__init__(tasks, params=params, chunk_size=chunk_size)
        self.eps = float(eps)
        self.weight_sums: dict[str, float] = {}
        self.steps = 0

    def compute_weights(self, jac, losses):
        norms = jac.norm(dim=1).tolist()
        s = float(jac.sum(dim=0).norm())
        weights = []
        for n in norms:
            if not (math.isfinite(n) and math.isfinite(s)) or n < self.eps:
                weights.append(1.0)
            else:
                weights.append(s / n)
        for t, w in zip(self.tasks, weights, strict=True):
            self.weight_sums[t] = self.weight_sums.get(t, 0.0) + w
        self.steps += 1
        return weights, {"S": s}

    def average_weights(self) -> dict[str, float]:
        """Mean weight per task over all steps so far (what the paper's Tab. VI / VII report)."""
        return {t: v / max(self.steps, 1) for t, v in self.weight_sums.items()}

    def report(self) -> dict:
        """The average weights over training (the paper's Tab. VI quantity) and the number of steps."""
        return {"average_weights": self.average_weights(), "steps": self.steps}

    def state_dict(self):
        return {**super().state_dict(), "weight_sums": dict(self.weight_sums), "steps": self.steps}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.weight_sums, self.steps = dict(state.get("weight_sums", {})), int(state.get("steps", 0))
