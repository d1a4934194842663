"""Gradient aggregators on the per-task Jacobian of the shared parameters, mostly TorchJD's.

``J`` (T × n, one row per task) comes from one forward (:class:`~mtlkit.balancing._grads.TaskGradients`);
the aggregator turns it into one update for the shared parameters. Task-specific parameters get their own
task's unweighted gradient (TorchJD's ``mtl_backward`` convention; the official CAGrad / PCGrad code does
the same; MGDA's and Nash-MTL's official code scale the heads by the task weights instead).

``on="features"`` applies the aggregator to the gradients with respect to the shared representation
(MGDA-UB, Sener & Koltun 2018) and back-propagates the aggregated representation gradient through the
backbone: cheaper (no Jacobian of the backbone), valid when every head reads the same representation.

Numerical safety: a row of J that is not finite (that task's gradient) is zeroed and the task sits out
the step (``nonfinite_tasks`` in the log); an aggregator that raises or returns a non-finite result is
replaced by equal weights for that step with a warning (``fallback`` = 1 in the log).
"""

from __future__ import annotations

import time
import warnings
from abc import abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn

from mtlkit.balancing._base import BALANCERS, Balancer, need_tasks, place, resolve_shared
from mtlkit.balancing._grads import TaskGradients, finite_rows, gramian_stats
from mtlkit.errors import MtlkitError


class JacobianAggregator(Balancer):
    """Base: per-task Jacobian -> aggregated update (see the module docstring)."""

    kind = "gradient aggregation"
    needs_features = True
    #: permuting the tasks permutes the weights and leaves the update unchanged
    order_invariant: ClassVar[bool] = True
    default_on: ClassVar[str] = "params"

    def __init__(self, tasks=None, on: str | None = None, chunk_size: int | None = None) -> None:
        super().__init__(tasks)
        on = on or self.default_on
        if on not in ("params", "features"):
            raise MtlkitError(f"{self.name}: on must be 'params' or 'features', got {on!r}")
        self.on, self.chunk_size = on, chunk_size
        self._agg: Any = None
        self.fallbacks = 0

    @abstractmethod
    def make_aggregator(self, n_tasks: int) -> Any:
        """The TorchJD aggregator (or any callable J -> combined vector)."""

    @property
    def aggregator(self) -> Any:
        if self._agg is None:
            self._agg = self.make_aggregator(len(self.tasks))
        return self._agg

    def aggregate(self, jac: torch.Tensor, gramian: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(combined update, weights or None): Gramian-based weightings reuse ``gramian`` = J Jᵀ."""
        from torchjd.aggregation import GramianWeightedAggregator, WeightedAggregator

        agg = self.aggregator
        if isinstance(agg, GramianWeightedAggregator):
            w = agg.gramian_weighting(gramian)
        elif isinstance(agg, WeightedAggregator):
            w = agg.weighting(jac)
        else:
            return agg(jac), None
        w = w.to(jac.dtype)
        return w @ jac, w

    def transform_losses(self, losses: list[torch.Tensor]) -> list[torch.Tensor]:
        """Hook for methods that rescale the losses before differentiation (IMTL-L)."""
        return losses

    def backward(self, losses, shared=None, features=None, **context):
        self._check_tasks(losses)
        values = self.transform_losses([losses[t] for t in self.tasks])
        tg = TaskGradients(values, features, self.chunk_size)
        params = resolve_shared(self.name, shared, context) if self.on == "params" else None
        jac = (tg.jacobian(params) if params is not None else tg.feature_jacobian()).detach()
        jac, gramian, finite = finite_rows(jac)
        skip = [i for i, f in enumerate(finite.tolist()) if not f]
        fallback, err = 0, ""
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                combined, w = self.aggregate(jac, gramian)
            # a sum is a cheap test of a long vector (it is non-finite when any entry is, or on overflow)
            if not bool(torch.isfinite(combined.sum())) or (w is not None and not bool(torch.isfinite(w).all())):
                err = "non-finite result"
        except Exception as e:  # a solver failure must never end the run
            err = f"{type(e).__name__}: {e}"
        agg_ms = 1000.0 * (time.perf_counter() - t0)
        if err:
            fallback = 1
            self.fallbacks += 1
            warnings.warn(f"{self.name}: aggregation failed ({err}); equal weights for this step",
                          RuntimeWarning, stacklevel=2)
            w = finite.to(jac.dtype)
            combined = w @ jac
        if params is not None:
            tg.backward_aggregated(params, combined, skip=skip)
        else:
            tg.backward_features(combined, skip=skip)
        stats = gramian_stats(gramian)
        info: dict[str, Any] = {
            "weights": {} if w is None else dict(zip(self.tasks, w.tolist(), strict=True)),
            "grad_norms": dict(zip(self.tasks, stats["norms"].tolist(), strict=True)),
            "conflicts": stats["conflicts"],
            "fallback": fallback,
            "aggregate_ms": agg_ms,  # the aggregator's own cost (solvers), for the log
        }
        if skip:
            info["nonfinite_tasks"] = [self.tasks[i] for i in skip]
        return info

    def state_dict(self):
        return {**super().state_dict(), "fallbacks": self.fallbacks}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.fallbacks = int(state.get("fallbacks", 0))


# ------------------------------------------------------------------------------ TorchJD wrappers
@BALANCERS.register("mgda")
class MGDA(JacobianAggregator):
    """MGDA (Désidéri 2012; Sener & Koltun, NeurIPS 2018): the min-norm point of the convex hull of the task
    gradients, by the Frank-Wolfe solver of Sener & Koltun's Algorithm 2 (TorchJD ``MGDA``). The official
    code's gradient normalisation (``loss+``) is not applied. ``on="features"`` is MGDA-UB."""

    name = "mgda"
    paper = "Sener & Koltun, NeurIPS 2018"
    options = {"on": "params", "epsilon": 0.001, "max_iters": 100, "chunk_size": None}

    def __init__(self, tasks=None, on=None, epsilon: float = 0.001, max_iters: int = 100, chunk_size=None) -> None:
        super().__init__(tasks, on, chunk_size)
        self.epsilon, self.max_iters = float(epsilon), int(max_iters)

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import MGDA as _MGDA

        return _MGDA(epsilon=self.epsilon, max_iters=self.max_iters)


@BALANCERS.register("mgda_ub")
class MGDAUB(MGDA):
    """MGDA-UB (Sener & Koltun, NeurIPS 2018): MGDA on the gradients of the shared representation."""

    name = "mgda_ub"
    options = {**MGDA.options, "on": "features"}
    default_on = "features"


@BALANCERS.register("pcgrad")
class PCGrad(JacobianAggregator):
    """PCGrad (Yu et al., NeurIPS 2020): each task gradient is projected onto the normal plane of every
    conflicting one, in random order, and the projections are summed (TorchJD ``PCGrad``)."""

    name = "pcgrad"
    paper = "Yu et al., NeurIPS 2020"
    options = {"on": "params", "chunk_size": None}
    order_invariant = False

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import PCGrad as _PCGrad

        return _PCGrad()


@BALANCERS.register("cagrad")
class CAGrad(JacobianAggregator):
    """CAGrad (Liu et al., NeurIPS 2021): d = g₀ + (√φ / ||g_w||) g_w with w minimising
    g_wᵀg₀ + √φ ||g_w|| on the simplex, √φ = c ||g₀|| (TorchJD ``CAGrad``, solved by cvxpy/Clarabel instead
    of the official scipy SLSQP). ``rescale`` as the official code: 0 none, 1 (default) d / (1 + c²),
    2 d / (1 + c)."""

    name = "cagrad"
    paper = "Liu et al., NeurIPS 2021"
    options = {"c": 0.4, "rescale": 1, "on": "params", "chunk_size": None}
    requires = ("cvxpy", "clarabel")

    def __init__(self, tasks=None, c: float = 0.4, rescale: int = 1, on=None, chunk_size=None) -> None:
        super().__init__(tasks, on, chunk_size)
        if c < 0 or rescale not in (0, 1, 2):
            raise MtlkitError(f"cagrad: need c >= 0 and rescale in 0, 1, 2; got c={c}, rescale={rescale}")
        self.c, self.rescale = float(c), int(rescale)

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import CAGrad as _CAGrad

        return _CAGrad(c=self.c)

    def aggregate(self, jac, gramian):
        combined, w = super().aggregate(jac, gramian)
        scale = {0: 1.0, 1: 1.0 / (1.0 + self.c**2), 2: 1.0 / (1.0 + self.c)}[self.rescale]
        return combined * scale, w * scale


@BALANCERS.register("graddrop")
class GradDrop(JacobianAggregator):
    """GradDrop (Chen et al., NeurIPS 2020): per coordinate, keep only the gradients of one sign, chosen with
    probability given by the sign purity P = ½(1 + Σ g / Σ |g|) (TorchJD ``GradDrop``, f = identity).
    Default on the shared representation, as in the paper (a GradDrop layer on the activations) and LibMTL;
    ``leak`` ∈ [0, 1] lets that fraction of every gradient through."""

    name = "graddrop"
    paper = "Chen et al., NeurIPS 2020"
    options = {"leak": 0.0, "on": "features", "chunk_size": None}
    order_invariant = False
    default_on = "features"

    def __init__(self, tasks=None, leak: float = 0.0, on=None, chunk_size=None) -> None:
        super().__init__(tasks, on, chunk_size)
        if not 0 <= leak <= 1:
            raise MtlkitError(f"graddrop: leak must be in [0, 1], got {leak}")
        self.leak = float(leak)

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import GradDrop as _GradDrop

        return _GradDrop(leak=torch.full((n_tasks,), self.leak) if self.leak else None)

    def aggregate(self, jac, gramian):
        agg = self.aggregator
        if agg.leak is not None:
            agg.leak = agg.leak.to(device=jac.device, dtype=jac.dtype)
        return agg(jac), None


@BALANCERS.register("imtl")
class IMTL(JacobianAggregator):
    """IMTL (Liu et al., ICLR 2021): IMTL-G weights (the update has equal projections on all task unit
    gradients; TorchJD ``IMTLG``, which uses a pseudo-inverse) on the gradients of IMTL-L's scaled losses
    e^{s_t} L_t - s_t, with learnable s (init 0) that the trainer optimises (their gradient
    e^{s_t} L_t - 1 comes with the backward). ``loss_scale=False`` gives IMTL-G alone."""

    name = "imtl"
    paper = "Liu et al., ICLR 2021"
    options = {"loss_scale": True, "on": "params", "chunk_size": None}

    def __init__(self, tasks=None, loss_scale: bool = True, on=None, chunk_size=None) -> None:
        super().__init__(tasks, on, chunk_size)
        self.loss_scale = bool(loss_scale)
        self.scales = nn.Parameter(torch.zeros(len(tasks))) if (tasks is not None and self.loss_scale) else None

    def parameters(self) -> list[nn.Parameter]:
        if not self.loss_scale:
            return []
        need_tasks(self.name, self.tasks)
        return [self.scales]

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import IMTLG

        return IMTLG()

    def transform_losses(self, losses):
        if not self.loss_scale:
            return losses
        if self.scales is None:
            self.scales = nn.Parameter(torch.zeros(len(losses)))
        place(self.scales, losses[0].device)
        return [torch.exp(self.scales[i]) * loss - self.scales[i] for i, loss in enumerate(losses)]

    def state_dict(self):
        return {**super().state_dict(), "scales": None if self.scales is None else self.scales.detach().cpu()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        if state.get("scales") is not None:
            if self.scales is None:
                self.scales = nn.Parameter(state["scales"].clone())
            else:
                self.scales.data.copy_(state["scales"])


@BALANCERS.register("aligned_mtl")
class AlignedMTL(JacobianAggregator):
    """Aligned-MTL (Senushkin et al., CVPR 2023): align the principal components of the task gradients with
    the balance transformation B = √σ_min V Σ⁻¹ Vᵀ of the Gramian (TorchJD ``AlignedMTL``);
    ``scale_mode``: min (paper), median or rmse."""

    name = "aligned_mtl"
    paper = "Senushkin et al., CVPR 2023"
    options = {"scale_mode": "min", "on": "params", "chunk_size": None}

    def __init__(self, tasks=None, scale_mode: str = "min", on=None, chunk_size=None) -> None:
        super().__init__(tasks, on, chunk_size)
        if scale_mode not in ("min", "median", "rmse"):
            raise MtlkitError(f"aligned_mtl: scale_mode must be min, median or rmse, got {scale_mode!r}")
        self.scale_mode = scale_mode

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import AlignedMTL as _AlignedMTL

        return _AlignedMTL(scale_mode=self.scale_mode)


@BALANCERS.register("nash_mtl")
class NashMTL(JacobianAggregator):
    """Nash-MTL (Navon et al., ICML 2022): the Nash bargaining solution, weights α with (J Jᵀ) α = 1/α,
    by the official sequence of convex approximations (cvxpy / ECOS; TorchJD ``NashMTL``, defaults of the
    official code: ``optim_niter`` 20, ``max_norm`` 1 on ||Jᵀα||)."""

    name = "nash_mtl"
    paper = "Navon et al., ICML 2022"
    options = {"max_norm": 1.0, "update_weights_every": 1, "optim_niter": 20, "on": "params", "chunk_size": None}
    requires = ("cvxpy", "ecos")

    def __init__(self, tasks=None, max_norm: float = 1.0, update_weights_every: int = 1, optim_niter: int = 20,
                 on=None, chunk_size=None) -> None:
        super().__init__(tasks, on, chunk_size)
        self.max_norm, self.every, self.niter = float(max_norm), int(update_weights_every), int(optim_niter)
        self._pending_state: dict[str, Any] | None = None

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import NashMTL as _NashMTL

        agg = _NashMTL(n_tasks=n_tasks, max_norm=self.max_norm, update_weights_every=self.every,
                       optim_niter=self.niter)
        if self._pending_state is not None:
            import numpy as np

            wt = agg.weighting
            wt.prvs_alpha = np.asarray(self._pending_state["prvs_alpha"], dtype=np.float64)
            if self._pending_state["step"] > 0:
                wt._init_optim_problem()
                wt.step = float(self._pending_state["step"])
            self._pending_state = None
        return agg

    def aggregate(self, jac, gramian):
        with warnings.catch_warnings():  # cvxpy: "not DPP" (the official problem formulation; harmless)
            warnings.filterwarnings("ignore", message=".*not DPP.*")
            return super().aggregate(jac, gramian)

    def state_dict(self):
        state = super().state_dict()
        if self._agg is not None:
            wt = self._agg.weighting
            state["nash"] = {"prvs_alpha": [float(x) for x in wt.prvs_alpha], "step": float(wt.step)}
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self._agg = None
        self._pending_state = state.get("nash")


@BALANCERS.register("fairgrad")
class FairGrad(JacobianAggregator):
    """FairGrad (Ban & Ji, ICML 2024): α-fair allocation, weights w with (J Jᵀ) w = w^(-1/α), solved by
    scipy ``least_squares`` as the official code (TorchJD ``FairGrad``). α = 1 (proportional fairness) is
    our default; the paper tunes α per benchmark."""

    name = "fairgrad"
    paper = "Ban & Ji, ICML 2024"
    options = {"alpha": 1.0, "max_iters": None, "on": "params", "chunk_size": None}

    def __init__(self, tasks=None, alpha: float = 1.0, max_iters: int | None = None, on=None, chunk_size=None):
        super().__init__(tasks, on, chunk_size)
        if not alpha > 0:
            raise MtlkitError(f"fairgrad: alpha must be > 0, got {alpha}")
        self.alpha, self.max_iters = float(alpha), max_iters

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import FairGrad as _FairGrad

        return _FairGrad(alpha=self.alpha, max_iters=self.max_iters)


@BALANCERS.register("upgrad")
class UPGrad(JacobianAggregator):
    """UPGrad (Quinton & Rey, 2024, Jacobian Descent): project each task gradient onto the dual cone of all
    of them and average (TorchJD ``UPGrad``; a quadprog QP per step)."""

    name = "upgrad"
    paper = "Quinton & Rey, arXiv 2406.16232"
    options = {"on": "params", "chunk_size": None}
    requires = ("qpsolvers", "quadprog")

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import UPGrad as _UPGrad

        return _UPGrad()


@BALANCERS.register("dualproj")
class DualProj(JacobianAggregator):
    """DualProj (the A-GEM-style projection of the mean gradient onto the dual cone of the task gradients;
    Lopez-Paz & Ranzato 2017, as formulated by Quinton & Rey 2024; TorchJD ``DualProj``)."""

    name = "dualproj"
    paper = "Lopez-Paz & Ranzato, NeurIPS 2017 / Quinton & Rey 2024"
    options = {"on": "params", "chunk_size": None}
    requires = ("qpsolvers", "quadprog")

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import DualProj as _DualProj

        return _DualProj()


@BALANCERS.register("gradvac")
class GradVac(JacobianAggregator):
    """Gradient Vaccine (Wang et al., ICLR 2021): raise each pair's cosine towards an EMA target φ̂
    (decay ``beta``), in random order (TorchJD ``GradVac``; its and LibMTL's default beta 0.5)."""

    name = "gradvac"
    paper = "Wang et al., ICLR 2021"
    options = {"beta": 0.5, "on": "params", "chunk_size": None}
    order_invariant = False

    def __init__(self, tasks=None, beta: float = 0.5, on=None, chunk_size=None) -> None:
        super().__init__(tasks, on, chunk_size)
        if not 0 <= beta <= 1:
            raise MtlkitError(f"gradvac: beta must be in [0, 1], got {beta}")
        self.beta = float(beta)
        self._pending_phi: torch.Tensor | None = None

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import GradVac as _GradVac

        return _GradVac(beta=self.beta)

    def aggregate(self, jac, gramian):
        if self._pending_phi is not None:
            wt = self.aggregator.gramian_weighting
            wt._ensure_state(len(self.tasks), gramian.dtype)
            wt._phi_t = self._pending_phi.to(gramian.dtype)
            self._pending_phi = None
        return super().aggregate(jac, gramian)

    def state_dict(self):
        state = super().state_dict()
        phi = None if self._agg is None else self._agg.gramian_weighting._phi_t
        state["phi"] = None if phi is None else phi.clone()
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self._agg = None
        self._pending_phi = state.get("phi")
