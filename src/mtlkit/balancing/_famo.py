"""FAMO: Fast Adaptive Multitask Optimization (Liu et al., NeurIPS 2023), as in the official code
(github.com/Cranial-XIX/FAMO, ``methods/weight_methods.py``, class ``FAMO``)."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from mtlkit.balancing._base import BALANCERS, Balancer, clip_unscaled, grad_scale_of, resolve_shared, scaled
from mtlkit.errors import MtlkitError


@BALANCERS.register("famo")
class FAMO(Balancer):
    """Logits ξ (init 0), z = softmax(ξ), D_t = L_t - min_t + 1e-8; the model minimises
    Σ_t z_t log D_t / c with c = Σ_t z_t / D_t (detached), i.e. weights w_t = z_t / (c D_t) that sum to 1.

    After the model's step ξ takes one step of its own Adam (lr ``w_lr`` 0.025, weight decay ``gamma``
    1e-3 as the official NYUv2 recipe ``experiments/nyuv2/run.sh``, the paper's Algorithm 2, LibMTL and
    TorchJD) on d = ∂ softmax(ξ)ᵀδ / ∂ξ with δ_t = log D_t(before) - log D_t(after) (official
    ``FAMO.update``). ``update="refit"`` (default, the official ``experiments/nyuv2/trainer.py``) needs the
    losses of the same batch after the step: the joint strategy re-computes them (one extra forward without
    graph) and calls :meth:`post_step`; a user loop does the same. ``"next"`` uses the next batch's losses
    instead (no extra forward; our cheaper approximation), which is also the fallback (with a warning) when
    :meth:`post_step` is not called. ``max_norm`` 1.0 clips the shared parameters' gradient norm after the
    backward, as the official code (``--max_norm`` default 1.0, ``WeightMethod.backward``:
    ``clip_grad_norm_(shared_parameters, max_norm)``); 0 turns it off (TorchJD, LibMTL). The minimum
    losses are 0.
    """

    name = "famo"
    paper = "Liu et al., NeurIPS 2023"
    options = {"gamma": 0.001, "w_lr": 0.025, "max_norm": 1.0, "update": "refit"}

    def __init__(self, tasks=None, gamma: float = 0.001, w_lr: float = 0.025, max_norm: float = 1.0,
                 update: str = "refit") -> None:
        super().__init__(tasks)
        if update not in ("refit", "next"):
            raise MtlkitError(f"famo: update must be 'refit' or 'next', got {update!r}")
        self.gamma, self.w_lr, self.max_norm, self.update = float(gamma), float(w_lr), float(max_norm), update
        self.logits: torch.Tensor | None = None
        self.opt: torch.optim.Adam | None = None
        self.prev: torch.Tensor | None = None  # losses before the last model step (awaiting their "after")
        self.min_losses: torch.Tensor | None = None
        self._warned = False
        if tasks is not None:
            self._init(len(tasks), torch.device("cpu"))

    @property
    def needs_post_step_losses(self) -> bool:  # type: ignore[override]
        return self.update == "refit"

    def _init(self, n: int, device: torch.device) -> None:
        self.logits = torch.zeros(n, device=device, requires_grad=True)
        self.opt = torch.optim.Adam([self.logits], lr=self.w_lr, weight_decay=self.gamma)
        self.min_losses = torch.zeros(n, device=device)

    def _to(self, device: torch.device) -> None:
        if self.logits is None:
            self._init(len(self.tasks), device)
        elif self.logits.device != device:
            self.logits.data = self.logits.data.to(device)
            self.min_losses = self.min_losses.to(device)
            for st in self.opt.state.values():
                for k, v in st.items():
                    if torch.is_tensor(v) and v.dim() > 0:
                        st[k] = v.to(device)

    def _stack(self, losses) -> torch.Tensor:
        return torch.stack([losses[t].detach().reshape(()) for t in self.tasks]).to(self.logits.dtype)

    def update_logits(self, before: torch.Tensor, after: torch.Tensor) -> None:
        """One Adam step of ξ from the loss change ``before -> after`` (official ``FAMO.update``)."""
        delta = (before - self.min_losses + 1e-8).log() - (after - self.min_losses + 1e-8).log()
        if not torch.isfinite(delta).all():
            return  # a non-finite loss must not corrupt the logits
        with torch.enable_grad():
            d = torch.autograd.grad(F.softmax(self.logits, -1), self.logits, grad_outputs=delta.detach())[0]
        self.opt.zero_grad()
        self.logits.grad = d
        self.opt.step()

    def backward(self, losses, shared=None, features=None, **context):
        self._check_tasks(losses)
        device = losses[self.tasks[0]].device
        self._to(device)
        current = self._stack(losses)
        if self.prev is not None:  # post_step was not called for the previous step: use this batch's losses
            if self.update == "refit" and not self._warned:
                warnings.warn("famo: post_step(losses_after) was not called after the optimizer step; updating "
                              "from the next batch's losses (update='next')", RuntimeWarning, stacklevel=2)
                self._warned = True
            self.update_logits(self.prev, current)
        z = F.softmax(self.logits.detach(), -1)
        D = torch.stack([losses[t].reshape(()) for t in self.tasks]) - self.min_losses + 1e-8
        c = (z / D.detach()).sum()
        total = (D.log() * z / c).sum()
        scale = grad_scale_of(self.name, context)
        scaled(total, scale).backward()
        if self.max_norm > 0:
            params = resolve_shared(f"{self.name} (max_norm clipping; max_norm=0 turns it off)", shared, context)
            clip_unscaled(params, self.max_norm, scale)
        self.prev = current
        w = (z / (c * D.detach())).tolist()
        return {"weights": dict(zip(self.tasks, w, strict=True)), "loss": float(total.detach())}

    def post_step(self, losses) -> None:
        if self.prev is None:
            return
        self.update_logits(self.prev, self._stack(losses).to(self.prev.device))
        self.prev = None

    def state_dict(self):
        return {**super().state_dict(),
                "logits": None if self.logits is None else self.logits.detach().cpu(),
                "opt": None if self.opt is None else self.opt.state_dict(),
                "prev": None if self.prev is None else self.prev.cpu(),
                "min_losses": None if self.min_losses is None else self.min_losses.cpu()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if state.get("logits") is None:
            return
        self._init(len(state["logits"]), torch.device("cpu"))
        self.logits.data.copy_(state["logits"])
        self.opt.load_state_dict(state["opt"])
        self.min_losses = state["min_losses"].clone()
        self.prev = None if state["prev"] is None else state["prev"].clone()
