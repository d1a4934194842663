"""Loss weightings that need only the loss values: UW, DWA, DTP, RLW, GLS.

Each backpropagates Σ_t w_t L_t (UW adds its regulariser) in one backward pass, so they cost what the
equal-weight step costs.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from mtlkit.balancing._base import BALANCERS, Balancer, WeightedSum, grad_scale_of, need_tasks, place, scaled
from mtlkit.errors import MtlkitError


@BALANCERS.register("uw")
class UncertaintyWeighting(Balancer):
    """Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018).

    Objective Σ_t ½ exp(-s_t) L_t + ½ s_t with learnable s_t = log σ_t², the form of the MTAN code
    (lorenmt/mtan ``im2im_pred/utils.py``), LibMTL ``UW.py`` and AvivNavon/nash-mtl ``Uncertainty``; the
    trainer optimises s with the model's optimizer (no weight decay). ``init``: 0.0 (default: σ = 1, as
    nash-mtl ``methods/weight_methods.py`` and the authors' example, yaringal/multi-task-learning-example)
    or -0.5 (lorenmt/mtan ``im2im_pred/model_segnet_*.py`` ``logsigma`` and LibMTL ``UW.init_param``).
    Logged weights are ½ exp(-s_t).
    """

    name = "uw"
    paper = "Kendall et al., CVPR 2018"
    options = {"init": 0.0}

    def __init__(self, tasks=None, init: float = 0.0) -> None:
        super().__init__(tasks)
        try:
            self.init = float(init)
        except (TypeError, ValueError):
            raise MtlkitError(f"uw: init (the initial log-variance) must be a number, got {init!r}") from None
        if not math.isfinite(self.init):
            raise MtlkitError(f"uw: init must be finite, got {init!r}")
        self.log_vars = nn.Parameter(torch.full((len(tasks),), self.init)) if tasks is not None else None

    def parameters(self) -> list[nn.Parameter]:
        need_tasks(self.name, self.tasks)
        return [self.log_vars]

    def backward(self, losses, shared=None, features=None, **context):
        self._check_tasks(losses)
        if self.log_vars is None:
            self.log_vars = nn.Parameter(torch.full((len(self.tasks),), self.init))
        first = losses[self.tasks[0]]
        place(self.log_vars, first.device)
        s = self.log_vars
        total = sum(0.5 * torch.exp(-s[i]) * losses[t] + 0.5 * s[i] for i, t in enumerate(self.tasks))
        scaled(total, grad_scale_of(self.name, context)).backward()
        w = (0.5 * torch.exp(-s.detach())).tolist()
        return {"weights": dict(zip(self.tasks, w, strict=True)), "loss": float(total.detach())}

    def state_dict(self):
        return {**super().state_dict(), "log_vars": None if self.log_vars is None else self.log_vars.detach().cpu()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if state.get("log_vars") is not None:
            if self.log_vars is None:
                self.log_vars = nn.Parameter(state["log_vars"].clone())
            else:
                self.log_vars.data.copy_(state["log_vars"])


@BALANCERS.register("dwa")
class DynamicWeightAverage(WeightedSum):
    """Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019): w_t = T·softmax_t(r_t / temp), with
    r_t = L̄_t(k-1) / L̄_t(k-2) the ratio of the task's mean training loss over the last two periods.

    A period is one epoch, as the official code (lorenmt/mtan ``im2im_pred/utils.py``, ``avg_cost`` per
    epoch) and LibMTL ``DWA.py`` (``train_loss_buffer`` per epoch): ``window="epoch"`` (default) takes the
    iterations per epoch from :meth:`setup` (the trainer calls it); a number fixes the window in
    iterations. Without ``setup`` (a user loop) ``"epoch"`` falls back to 100 iterations, with a warning.
    Weights are 1 for the first two periods, as in the official code, and change only at period
    boundaries.
    """

    name = "dwa"
    paper = "Liu et al., CVPR 2019 (MTAN)"
    options = {"temp": 2.0, "window": "epoch"}
    FALLBACK_WINDOW = 100

    def __init__(self, tasks=None, temp: float = 2.0, window: int | str = "epoch") -> None:
        super().__init__(tasks)
        if window != "epoch":
            try:
                window = int(window)
            except (TypeError, ValueError):
                window = 0
            if window < 1:
                raise MtlkitError(f"dwa: window must be 'epoch' or an integer >= 1 (iterations), got {window!r}")
        if not temp > 0:
            raise MtlkitError(f"dwa: temp must be > 0, got {temp}")
        self.temp, self.window_option = float(temp), window
        self.window: int | None = window if isinstance(window, int) else None
        self.calls = 0
        self.running: list[float] | None = None  # sums over the current period
        self.history: list[list[float]] = []  # mean losses of the last two complete periods
        self.current: list[float] | None = None

    def setup(self, *, epoch_iters: int | None = None, model=None) -> None:
        if self.window_option == "epoch" and epoch_iters is not None:
            if int(epoch_iters) < 1:
                raise MtlkitError(f"dwa: the epoch must have at least one iteration, got {epoch_iters}")
            self.window = int(epoch_iters)

    def weights(self, losses, **context):
        if self.window is None:
            warnings.warn(f"dwa: window='epoch' but setup(epoch_iters=...) was not called; using a window of "
                          f"{self.FALLBACK_WINDOW} iterations (pass window=N to choose)", RuntimeWarning, stacklevel=3)
            self.window = self.FALLBACK_WINDOW
        n = len(self.tasks)
        if self.current is None:
            self.current = [1.0] * n
        w = dict(zip(self.tasks, self.current, strict=True))
        values = [float(losses[t].detach()) for t in self.tasks]
        self.running = values if self.running is None else [a + b for a, b in zip(self.running, values, strict=True)]
        self.calls += 1
        if self.calls % self.window == 0:
            self.history = (self.history + [[v / self.window for v in self.running]])[-2:]
            self.running = None
            if len(self.history) == 2:
                self.current = self.from_history(self.history[-1], self.history[-2])
        return w

    def from_history(self, last: list[float], before: list[float]) -> list[float]:
        """T · softmax(r / temp) with r = last / before (a ratio with a zero or non-finite part counts as 1)."""
        r = []
        for a, b in zip(last, before, strict=True):
            x = a / b if b > 0 else 1.0
            r.append(x if math.isfinite(x) else 1.0)
        m = max(r)
        e = [math.exp((x - m) / self.temp) for x in r]
        s = sum(e)
        return [len(r) * x / s for x in e]

    def state_dict(self):
        return {**super().state_dict(), "calls": self.calls, "running": self.running, "history": self.history,
                "current": self.current, "window": self.window}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.calls, self.running = state["calls"], state["running"]
        self.history, self.current = state["history"], state["current"]
        if state.get("window") is not None:
            self.window = int(state["window"])


@BALANCERS.register("dtp")
class DynamicTaskPrioritization(WeightedSum):
    """Dynamic Task Prioritization (Guo et al., ECCV 2018): w_t = -(1 - κ̄_t)^γ log κ̄_t, the focal-loss
    form, with κ̄_t a moving average (``momentum``) of a KPI in (0, 1] where higher is better.

    KPI: when the strategy/user passes ``kpi={task: value in [0, 1]}`` as context it is used; otherwise our
    loss-based surrogate κ_t = exp(-L_t / L_t(0)) (L_t(0): the first loss seen), scale-free across tasks,
    1 at a perfect fit and e⁻¹ at the start, so harder (slower) tasks get larger weights. γ = 1 (our
    choice; the paper leaves it per task). No official code is public: the reference is the paper's
    focal form (Eq. 2) with the KPI's moving average.
    """

    name = "dtp"
    paper = "Guo et al., ECCV 2018"
    options = {"gamma": 1.0, "momentum": 0.9}

    def __init__(self, tasks=None, gamma: float = 1.0, momentum: float = 0.9) -> None:
        super().__init__(tasks)
        if gamma < 0 or not 0 <= momentum < 1:
            raise MtlkitError(f"dtp: need gamma >= 0 and 0 <= momentum < 1, got {gamma}, {momentum}")
        self.gamma, self.momentum = float(gamma), float(momentum)
        self.initial: dict[str, float] = {}
        self.kpi: dict[str, float] = {}

    def weights(self, losses, **context):
        given = context.get("kpi")
        out = {}
        for t in self.tasks:
            if given is not None and t in given:
                k = float(given[t])
            else:
                v = float(losses[t].detach())
                if t not in self.initial and math.isfinite(v) and v > 0:
                    self.initial[t] = v
                k = math.exp(-v / self.initial[t]) if t in self.initial and math.isfinite(v) else 1.0
            k = min(max(k, 1e-6), 1.0)
            self.kpi[t] = k if t not in self.kpi else self.momentum * self.kpi[t] + (1 - self.momentum) * k
            kb = min(max(self.kpi[t], 1e-6), 1.0)
            out[t] = -((1.0 - kb) ** self.gamma) * math.log(kb)
        return out

    def state_dict(self):
        return {**super().state_dict(), "initial": dict(self.initial), "kpi": dict(self.kpi)}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.initial, self.kpi = dict(state["initial"]), dict(state["kpi"])


@BALANCERS.register("rlw")
class RandomLossWeighting(WeightedSum):
    """Random Loss Weighting (Lin et al., TMLR 2022): w = softmax(z), z ~ N(0, I) drawn every step, weights
    summing to 1, as the authors' LibMTL ``RLW.py`` (``F.softmax(torch.randn(T), dim=-1)``): a float32 draw
    from the global torch RNG, so a seed gives the same weights as there."""

    name = "rlw"
    paper = "Lin et al., TMLR 2022"

    def weights(self, losses, **context):
        w = torch.softmax(torch.randn(len(self.tasks)), dim=0).tolist()
        return dict(zip(self.tasks, w, strict=True))


@BALANCERS.register("gls")
class GeometricLossStrategy(Balancer):
    """Geometric Loss Strategy (Chennupati et al., CVPRW 2019): minimise (Π_t L_t)^(1/T) (LibMTL ``GLS.py``).

    Its gradient is Σ_t w_t ∇L_t with w_t = GLS / (T L_t); those are the logged weights. Losses are clamped
    at ``eps`` so a zero loss gives a finite objective.
    """

    name = "gls"
    paper = "Chennupati et al., CVPRW 2019"
    options = {"eps": 1e-8}

    def __init__(self, tasks=None, eps: float = 1e-8) -> None:
        super().__init__(tasks)
        self.eps = float(eps)

    def backward(self, losses, shared=None, features=None, **context) -> dict[str, Any]:
        self._check_tasks(losses)
        stacked = torch.stack([losses[t].reshape(()) for t in self.tasks]).clamp_min(self.eps)
        gls = torch.exp(torch.log(stacked).mean())
        scaled(gls, grad_scale_of(self.name, context)).backward()
        w = (gls.detach() / (len(self.tasks) * stacked.detach())).tolist()
        return {"weights": dict(zip(self.tasks, w, strict=True)), "loss": float(gls.detach())}
