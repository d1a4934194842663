"""GradNorm (Chen et al., ICML 2018): learn loss weights so that weighted gradient norms follow the tasks'
relative training rates."""

from __future__ import annotations

import torch
from torch import nn

from mtlkit.balancing._base import BALANCERS, need_tasks, place
from mtlkit.balancing._gradweighting import GradientLossWeighting
from mtlkit.errors import MtlkitError


@BALANCERS.register("gradnorm")
class GradNorm(GradientLossWeighting):
    """Learnable weights w (init 1). With G_t = ||∇_W w_t L_t|| on the last shared layer W, Ḡ = mean_t G_t,
    r_t = L̃_t / mean L̃ (L̃_t = L_t / L_t(0)), the weights get the gradient of
    L_grad = Σ_t |G_t - Ḡ r_t^α| with the target Ḡ r_t^α held constant (paper, Sec. 3.2), i.e.
    sign(G_t - target_t) · ||∇_W L_t||; the trainer's optimizer steps them (no weight decay). Before each
    use they are renormalised to sum to T (the paper renormalises after each step; ours is the same
    weights one call later), clamped at 0 first (our guard against a step that makes one negative).
    No official code is public; the reference is the paper's Algorithm 1. LibMTL ``GradNorm.py`` differs:
    it parametrises w = T·softmax(ξ) and starts after one epoch of equal weights.
    """

    name = "gradnorm"
    paper = "Chen et al., ICML 2018"
    options = {"alpha": 1.5, "params": "last", "chunk_size": None}

    def __init__(self, tasks=None, alpha: float = 1.5, params: str = "last", chunk_size: int | None = None) -> None:
        super().__init__(tasks, params=params, chunk_size=chunk_size)
        if alpha < 0:
            raise MtlkitError(f"gradnorm: alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.loss_weights = nn.Parameter(torch.ones(len(tasks))) if tasks is not None else None
        self.initial: torch.Tensor | None = None

    def parameters(self) -> list[nn.Parameter]:
        need_tasks(self.name, self.tasks)
        return [self.loss_weights]

    def _renormalise(self) -> None:
        with torch.no_grad():
            w = self.loss_weights.clamp_min(0)
            s = w.sum()
            if not torch.isfinite(s) or s <= 0:
                w = torch.ones_like(w)
                s = w.sum()
            self.loss_weights.copy_(w * (len(w) / s))

    def compute_weights(self, jac, losses):
        if self.loss_weights is None:
            self.loss_weights = nn.Parameter(torch.ones(len(self.tasks)))
        place(self.loss_weights, jac.device)
        self._renormalise()
        values = torch.stack([v.detach().reshape(()) for v in losses]).to(jac.dtype)
        if self.initial is None:
            self.initial = values.clone()
        norms = jac.norm(dim=1)
        w = self.loss_weights.detach().to(jac.dtype)
        g = w * norms
        ratio = values / self.initial.to(values.device).clamp_min(1e-12)
        rel = ratio / ratio.mean().clamp_min(1e-12)
        target = g.mean() * rel.pow(self.alpha)
        grad = torch.sign(g - target) * norms
        grad = torch.where(torch.isfinite(grad), grad, torch.zeros_like(grad)).to(self.loss_weights.dtype)
        if self.grad_scale is not None:  # scaled like every other .grad under a GradScaler
            grad = grad * self.grad_scale
        if self.loss_weights.grad is None:
            self.loss_weights.grad = grad
        else:
            self.loss_weights.grad.add_(grad)
        l_grad = (g - target).abs().sum()
        return w.tolist(), {"gradnorm_loss": float(l_grad)}

    def state_dict(self):
        return {**super().state_dict(),
                "loss_weights": None if self.loss_weights is None else self.loss_weights.detach().cpu(),
                "initial": None if self.initial is None else self.initial.cpu()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if state.get("loss_weights") is not None:
            if self.loss_weights is None:
                self.loss_weights = nn.Parameter(state["loss_weights"].clone())
            else:
                self.loss_weights.data.copy_(state["loss_weights"])
        self.initial = None if state.get("initial") is None else state["initial"].clone()
