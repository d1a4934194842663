"""Gradient aggregators on the per-task Jacobian of the shared parameters, mostly TorchJD's.

``J`` (T × n, one row per task) comes from one forward (:class:`~mtlkit.balancing._grads.TaskGradients`);
the aggregator turns it into one update for the shared parameters, with the scale of the method's official
code (see the package docstring; ``scale="mean"`` where TorchJD / LibMTL differ).

Task-specific parameters: ``heads="own"`` (default) gives each head its own task's unweighted gradient
(TorchJD's ``mtl_backward``; the official CAGrad, PCGrad and FairGrad code, which back-propagate every loss
alone); ``heads="weights"`` gives head t the gradient of w_t L_t with the method's weights w, as the
official MGDA code (isl-org/MultiObjectiveOptimization ``multi_task/train_multi_task.py``: the backward of
Σ_t scale[t] L_t) and the Nash-MTL / IMTL-G code (AvivNavon/nash-mtl ``methods/weight_methods.py``: the
backward of Σ_t α_t L_t) do. Methods without weights (GradDrop) only have ``"own"``.

``on="features"`` applies the aggregator to the gradients with respect to the shared representation
(MGDA-UB, Sener & Koltun 2018) and back-propagates the aggregated representation gradient through the
backbone: cheaper (no Jacobian of the backbone), valid when every head reads the same representation.

``max_norm`` (Nash-MTL, FairGrad) clips the shared parameters' gradient after the backward, exactly as the
official code's ``torch.nn.utils.clip_grad_norm_(shared_parameters, max_norm)``.

``engine="autogram"`` (every aggregator whose weights depend only on J Jᵀ): TorchJD's Gramian engine
(``torchjd.autogram.Engine``, hooked on the model's backbone by ``setup(model=...)``) accumulates the Gramian
without holding J, the weights come from it and one backward of Σ_t w_t L_t writes the update. Slower and
no lighter than the Jacobian on CPU for mtlkit's ViT (``docs/balancing-speed.md``), hence not the default.

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
from torch import Tensor, nn

from mtlkit.balancing._base import (
    BALANCERS,
    Balancer,
    clip_unscaled,
    grad_scale_of,
    need_tasks,
    place,
    resolve_shared,
    scaled,
    solver_view,
)
from mtlkit.balancing._grads import TaskGradients, finite_rows, gramian_stats
from mtlkit.balancing._minnorm import min_norm_weights
from mtlkit.balancing._nashsolve import nash_weights
from mtlkit.errors import MtlkitError

HEADS = ("own", "weights")
ENGINES = ("jacobian", "autogram")
SCALES = ("sum", "mean")


def _check_scale(method: str, scale: str) -> str:
    if scale not in SCALES:
        raise MtlkitError(f"{method}: scale must be 'sum' (the official code) or 'mean' (TorchJD), got {scale!r}")
    return scale


class JacobianAggregator(Balancer):
    """Base: per-task Jacobian -> aggregated update (see the module docstring)."""

    kind = "gradient aggregation"
    needs_features = True
    #: permuting the tasks permutes the weights and leaves the update unchanged
    order_invariant: ClassVar[bool] = True
    default_on: ClassVar[str] = "params"

    #: the method returns weights w with update Jᵀw (``heads="weights"`` is possible)
    has_weights: ClassVar[bool] = True

    def __init__(self, tasks=None, on: str | None = None, chunk_size: int | None = None, heads: str = "own",
                 engine: str = "jacobian") -> None:
        super().__init__(tasks)
        on = on or self.default_on
        if on not in ("params", "features"):
            raise MtlkitError(f"{self.name}: on must be 'params' or 'features', got {on!r}")
        if heads not in HEADS:
            raise MtlkitError(f"{self.name}: heads must be 'own' (TorchJD) or 'weights' (official MGDA / Nash-MTL "
                              f"/ IMTL-G code), got {heads!r}")
        if heads == "weights" and not self.has_weights:
            raise MtlkitError(f"{self.name}: has no task weights, so heads='weights' does not apply; use heads=own")
        if engine not in ENGINES:
            raise MtlkitError(f"{self.name}: engine must be 'jacobian' or 'autogram', got {engine!r}")
        if engine == "autogram" and not (self.has_weights and on == "params"):
            raise MtlkitError(f"{self.name}: engine=autogram needs weights from the Gramian of the parameters' "
                              "Jacobian (on=params); use engine=jacobian")
        self.on, self.chunk_size, self.heads, self.engine = on, chunk_size, heads, engine
        self._engine: Any = None  # torchjd.autogram.Engine (engine=autogram), hooked on the model's backbone
        self._engine_root: nn.Module | None = None
        self._engine_failed = False
        #: > 0: clip the shared parameters' gradient norm after the backward (official clip_grad_norm_)
        self.max_norm = 0.0
        self._agg: Any = None
        self.fallbacks = 0

    @property
    def needs_shared_representation(self) -> bool:
        return self.on == "features"

    def prepare(self, tg: TaskGradients) -> None:  # noqa: B027  (most aggregators need only J)
        """Hook before :meth:`aggregate`, with the step's :class:`TaskGradients` (GradDrop reads the features)."""

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
        scale = grad_scale_of(self.name, context)
        values = [scaled(v, scale) for v in self.transform_losses([losses[t] for t in self.tasks])]
        tg = TaskGradients(values, features, self.chunk_size)
        params = resolve_shared(self.name, shared, context) if self.on == "params" else None
        reduce = context.get("reduce_jacobian")  # several processes: aggregate the global Jacobian
        if reduce is not None and params is None:
            raise MtlkitError(f"{self.name}: run.global_jacobian needs on=params (the feature Jacobians of "
                              "different processes belong to different samples); use on=params or turn it off")
        if reduce is None and self.engine == "autogram" and self._autogram_ready(params, context):
            info = self._autogram_backward(tg, values, params, scale, shared, context)
            if info is not None:
                return info
        raw = solver_view((tg.jacobian(params) if params is not None else tg.feature_jacobian()).detach(), scale)
        if reduce is not None:
            raw = reduce(raw)
        jac, gramian, finite = finite_rows(raw)
        if scale is not None and not bool(finite.all()):
            return self._overflow(tg, params, raw, finite, context)
        skip = [i for i, f in enumerate(finite.tolist()) if not f]
        fallback, err = 0, ""
        t0 = time.perf_counter()
        try:
            self.prepare(tg)
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
        head_w = None if self.heads == "own" or w is None else [0.0 if i in skip else float(x)
                                                                 for i, x in enumerate(w.tolist())]
        clip_params = (resolve_shared(f"{self.name} (max_norm clipping; max_norm=0 turns it off)", shared, context)
                       if self.max_norm > 0 else None)
        if scale is not None:
            combined = combined * scale  # .grad holds the scaled update, as GradScaler expects
        if params is not None:
            tg.backward_aggregated(params, combined, skip=skip, head_weights=head_w)
        else:
            tg.backward_features(combined, skip=skip, head_weights=head_w)
        stats = gramian_stats(gramian)
        info: dict[str, Any] = {
            "weights": {} if w is None else dict(zip(self.tasks, w.tolist(), strict=True)),
            "grad_norms": dict(zip(self.tasks, stats["norms"].tolist(), strict=True)),
            "conflicts": stats["conflicts"],
            "fallback": fallback,
            "aggregate_ms": agg_ms,  # the aggregator's own cost (solvers), for the log
        }
        if clip_params is not None:  # the official code: clip_grad_norm_(shared_parameters, max_norm)
            norm = clip_unscaled(clip_params, self.max_norm, scale)
            info["update_norm"] = norm
            info["clip"] = min(1.0, self.max_norm / (norm + 1e-6))
        if skip:
            info["nonfinite_tasks"] = [self.tasks[i] for i in skip]
        return info

    # ------------------------------------------------------------------ engine=autogram
    def setup(self, *, epoch_iters: int | None = None, model: nn.Module | None = None) -> None:
        """With ``engine="autogram"`` and a ``model``: hook TorchJD's Gramian engine on it now, so that the first
        step already uses it (hooks must see the forward; without this call they are added at the first
        ``backward`` that gets ``model=`` in its context, and that step uses the Jacobian)."""
        if self.engine == "autogram" and model is not None:
            self._make_engine(model, None)

    def _make_engine(self, model: nn.Module, params: list[nn.Parameter] | None) -> None:
        """TorchJD's ``Engine`` on ``model.backbone`` (or the model): it hooks the highest modules that own
        parameters directly. The hooked parameters must be the shared ones, else the Jacobian path stays."""
        from torchjd.autogram import Engine

        root = getattr(model, "backbone", model)
        if self._engine is not None and self._engine_root is root:
            return
        self._engine, self._engine_root, self._engine_failed = None, root, False
        # a module whose forward is never called (timm's VisionTransformer, whose blocks the backbone runs one
        # by one) would never fire its hook: such a backbone names the modules it calls (``gramian_modules``)
        modules = list(root.gramian_modules()) if hasattr(root, "gramian_modules") else [root]
        covered = {id(p) for m in modules for p in m.parameters() if p.requires_grad}
        if params is not None and covered != {id(p) for p in params}:
            warnings.warn(f"{self.name}: engine=autogram hooks {type(root).__name__}, whose parameters are not the "
                          "shared ones; using the Jacobian", RuntimeWarning, stacklevel=3)
            self._engine_failed = True
            return
        try:
            self._engine = Engine(*modules, batch_dim=None)
        except (ValueError, TypeError) as e:
            warnings.warn(f"{self.name}: TorchJD's autogram engine refuses this model ({e}); using the Jacobian",
                          RuntimeWarning, stacklevel=3)
            self._engine_failed = True

    def _autogram_ready(self, params, context) -> bool:
        model = context.get("model")
        if model is not None and getattr(model, "backbone", model) is not self._engine_root:
            self._make_engine(model, params)  # hooks see the next forward, not this one
            return False
        return self._engine is not None and not self._engine_failed

    def _autogram_backward(self, tg, values, params, scale, shared, context) -> dict[str, Any] | None:
        """Weights from the Gramian that TorchJD's engine accumulates layer by layer (the Jacobian is never
        whole in memory), then one backward of Σ_t w_t L_t into the shared parameters. Split at the features,
        the per-task objectives differentiated are ⟨∂L_t/∂z, z⟩ (same backbone gradients as L_t, the heads
        untouched); heads and other parameters get what :meth:`TaskGradients.backward_aggregated` gives."""
        t = len(values)
        if tg.split:
            stacked, _ = tg._head_pass()
            rows = torch.stack([sum((s[i] * f).sum() for s, f in zip(stacked, tg.features, strict=True))
                                for i in range(t)])
        else:
            rows = torch.stack([v.reshape(()) for v in values])
        try:
            gramian = self._engine.compute_gramian(rows).detach()
        except RuntimeError as e:  # no hooked module ran in this forward: the Jacobian path from now on
            warnings.warn(f"{self.name}: TorchJD's autogram engine saw no hooked module in the forward ({e}); "
                          "using the Jacobian", RuntimeWarning, stacklevel=3)
            self._engine_failed = True
            return None
        gramian = gramian.to(torch.float64 if gramian.dtype == torch.float64 else torch.float32)
        if scale is not None:
            gramian = gramian / (scale * scale)
        finite = torch.isfinite(gramian.diagonal())
        if scale is not None and not bool(finite.all()):  # overflow: no decision, the scaler skips the step
            torch.autograd.backward(list(rows), [torch.ones_like(r) for r in rows], inputs=params, retain_graph=True)
            tg.backward_aggregated(params, None)
            return {"weights": dict.fromkeys(self.tasks, 1.0), "overflow": 1, "fallback": 0, "engine": "autogram",
                    "nonfinite_tasks": [n for n, f in zip(self.tasks, finite.tolist(), strict=True) if not f]}
        keep = finite[:, None] & finite[None, :]
        gramian = torch.where(keep, gramian, torch.zeros_like(gramian))
        skip = [i for i, f in enumerate(finite.tolist()) if not f]
        fallback, err, w = 0, "", None
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                _, w = self.aggregate(gramian_factor(gramian), gramian)
            if w is None or not bool(torch.isfinite(w).all()):
                err = "non-finite result"
        except Exception as e:  # a solver failure must never end the run
            err = f"{type(e).__name__}: {e}"
        agg_ms = 1000.0 * (time.perf_counter() - t0)
        if err:
            fallback = 1
            self.fallbacks += 1
            warnings.warn(f"{self.name}: aggregation failed ({err}); equal weights for this step",
                          RuntimeWarning, stacklevel=3)
            w = finite.to(gramian.dtype)
        active = [i for i in range(t) if i not in skip and float(w[i]) != 0.0]
        if active:  # the rows hold the scaled losses: this writes S times the update under a GradScaler
            torch.autograd.backward([rows[i] for i in active], [w[i].to(rows.dtype) for i in active],
                                    inputs=params, retain_graph=True)
        head_w = None if self.heads == "own" else [0.0 if i in skip else float(x) for i, x in enumerate(w.tolist())]
        tg.backward_aggregated(params, None, skip=skip, head_weights=head_w)
        stats = gramian_stats(gramian)
        info: dict[str, Any] = {
            "weights": dict(zip(self.tasks, w.tolist(), strict=True)),
            "grad_norms": dict(zip(self.tasks, stats["norms"].tolist(), strict=True)),
            "conflicts": stats["conflicts"], "fallback": fallback, "aggregate_ms": agg_ms, "engine": "autogram",
        }
        if self.max_norm > 0:
            clip_params = resolve_shared(f"{self.name} (max_norm clipping; max_norm=0 turns it off)", shared, context)
            norm = clip_unscaled(clip_params, self.max_norm, scale)
            info["update_norm"] = norm
            info["clip"] = min(1.0, self.max_norm / (norm + 1e-6))
        if skip:
            info["nonfinite_tasks"] = [self.tasks[i] for i in skip]
        return info

    def _overflow(self, tg, params, raw, finite, context) -> dict[str, Any]:
        """A non-finite per-task gradient under a GradScaler is an overflow of the scale: no decision is made
        (the method's state is untouched) and the sum of the task gradients, non-finite, goes into ``.grad``,
        so ``scaler.step`` skips the step and ``scaler.update`` lowers S."""
        combined = raw.sum(0) * grad_scale_of(self.name, context)  # non-finite: the scaler sees the overflow
        if params is not None:
            tg.backward_aggregated(params, combined)
        else:
            tg.backward_features(combined)
        return {"weights": dict.fromkeys(self.tasks, 1.0), "overflow": 1, "fallback": 0,
                "nonfinite_tasks": [t for t, f in zip(self.tasks, finite.tolist(), strict=True) if not f]}

    def state_dict(self):
        return {**super().state_dict(), "fallbacks": self.fallbacks}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.fallbacks = int(state.get("fallbacks", 0))


def gramian_factor(gramian: Tensor) -> Tensor:
    """A T×T matrix L with L Lᵀ = G (from the eigendecomposition, negative round-off clipped): T "virtual
    gradients" with the Gramian of the real ones, so every Gramian-based aggregator yields the same weights
    from it as from the Jacobian (engine=autogram, where only G exists)."""
    g = gramian.detach().to(torch.float64)
    lam, v = torch.linalg.eigh(0.5 * (g + g.T))
    return (v * lam.clamp_min(0).sqrt()).to(gramian.dtype)


# ------------------------------------------------------------------------------ TorchJD wrappers
@BALANCERS.register("mgda")
class MGDA(JacobianAggregator):
    """MGDA (Désidéri 2012; Sener & Koltun, NeurIPS 2018): weights w on the simplex giving the min-norm point
    Jᵀw of the convex hull of the task gradients; the update is Jᵀw (weights sum to 1, the scale of the
    official isl-org/MultiObjectiveOptimization ``multi_task/train_multi_task.py``, which back-propagates
    Σ_t scale[t] L_t). ``solver="exact"`` (default) is Wolfe's min-norm-point algorithm
    (:mod:`._minnorm`): the exact point, closer than the official ``MinNormSolver`` (stops at 1e-5);
    ``solver="frank_wolfe"`` is TorchJD's ``MGDA`` (Frank-Wolfe, Algorithm 2 of the paper) with
    ``epsilon`` / ``max_iters``. The official code's optional gradient normalisation (``loss+``, ``l2``) is
    not applied. ``on="features"`` is MGDA-UB; ``heads="weights"`` scales the heads by w as the official
    code does."""

    name = "mgda"
    paper = "Sener & Koltun, NeurIPS 2018"
    options = {"on": "params", "solver": "exact", "epsilon": 0.001, "max_iters": 100, "heads": "own",
               "engine": "jacobian",
               "chunk_size": None}

    def __init__(self, tasks=None, on=None, solver: str = "exact", epsilon: float = 0.001, max_iters: int = 100,
                 heads: str = "own", chunk_size=None, engine: str = "jacobian") -> None:
        super().__init__(tasks, on, chunk_size, heads, engine)
        if solver not in ("exact", "frank_wolfe"):
            raise MtlkitError(f"{self.name}: solver must be 'exact' or 'frank_wolfe', got {solver!r}")
        self.solver, self.epsilon, self.max_iters = solver, float(epsilon), int(max_iters)

    def make_aggregator(self, n_tasks):
        if self.solver == "exact":
            return None
        from torchjd.aggregation import MGDA as _MGDA

        return _MGDA(epsilon=self.epsilon, max_iters=self.max_iters)

    def aggregate(self, jac, gramian):
        if self.solver == "frank_wolfe":
            return super().aggregate(jac, gramian)
        w = min_norm_weights(gramian).to(jac.dtype)
        return w @ jac, w


@BALANCERS.register("mgda_ub")
class MGDAUB(MGDA):
    """MGDA-UB (Sener & Koltun, NeurIPS 2018): MGDA on the gradients of the shared representation (the
    official code's ``rep`` gradients, ``multi_task/train_multi_task.py``)."""

    name = "mgda_ub"
    options = {**MGDA.options, "on": "features"}
    default_on = "features"


@BALANCERS.register("pcgrad")
class PCGrad(JacobianAggregator):
    """PCGrad (Yu et al., NeurIPS 2020): each task gradient is projected onto the normal plane of every
    conflicting one (the original gradients), in random order, and the projections are summed (TorchJD
    ``PCGrad``; the sum as the official tianheyu927/PCGrad ``PCGrad_tf.py`` and LibMTL ``PCGrad.py``)."""

    name = "pcgrad"
    paper = "Yu et al., NeurIPS 2020"
    options = {"on": "params", "heads": "own", "engine": "jacobian", "chunk_size": None}
    order_invariant = False

    def __init__(self, tasks=None, on=None, heads: str = "own", chunk_size=None,
                 engine: str = "jacobian") -> None:
        super().__init__(tasks, on, chunk_size, heads, engine)

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import PCGrad as _PCGrad

        return _PCGrad()


@BALANCERS.register("cagrad")
class CAGrad(JacobianAggregator):
    """CAGrad (Liu et al., NeurIPS 2021): d = g₀ + (√φ / ||g_w||) g_w with w minimising
    g_wᵀg₀ + √φ ||g_w|| on the simplex, √φ = c ||g₀||, g₀ the mean gradient (TorchJD ``CAGrad``, solved by
    cvxpy/Clarabel instead of the official scipy SLSQP). ``rescale`` as the official code: 0 none,
    1 (default) d / (1 + c²), 2 d / (1 + c). ``scale="sum"`` (default) multiplies by T as the official
    code does "to match the sum loss" (Cranial-XIX/CAGrad ``nyuv2/utils.py`` ``overwrite_grad``;
    AvivNavon/nash-mtl ``methods/weight_methods.py`` ``CAGrad.overwrite_grad``); ``"mean"`` is TorchJD's /
    LibMTL's scale."""

    name = "cagrad"
    paper = "Liu et al., NeurIPS 2021"
    options = {"c": 0.4, "rescale": 1, "scale": "sum", "on": "params", "heads": "own", "engine": "jacobian",
               "chunk_size": None}
    requires = ("cvxpy", "clarabel")

    def __init__(self, tasks=None, c: float = 0.4, rescale: int = 1, scale: str = "sum", on=None,
                 heads: str = "own", chunk_size=None, engine: str = "jacobian") -> None:
        super().__init__(tasks, on, chunk_size, heads, engine)
        if c < 0 or rescale not in (0, 1, 2):
            raise MtlkitError(f"cagrad: need c >= 0 and rescale in 0, 1, 2; got c={c}, rescale={rescale}")
        self.c, self.rescale, self.scale = float(c), int(rescale), _check_scale(self.name, scale)

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import CAGrad as _CAGrad

        return _CAGrad(c=self.c)

    def aggregate(self, jac, gramian):
        combined, w = super().aggregate(jac, gramian)
        scale = {0: 1.0, 1: 1.0 / (1.0 + self.c**2), 2: 1.0 / (1.0 + self.c)}[self.rescale]
        if self.scale == "sum":
            scale *= jac.shape[0]
        return combined * scale, w * scale


@BALANCERS.register("graddrop")
class GradDrop(JacobianAggregator):
    """GradDrop (Chen et al., NeurIPS 2020), on the shared representation A (default).

    ``variant="paper"`` (default): Algorithm 1 of the paper as LibMTL runs it
    (median-research-group/LibMTL ``LibMTL/weighting/GradDrop.py``): G_i = Σ_batch sgn(A) ∘ ∇_A L_i,
    per feature P = ½(1 + Σ_i G_i / (Σ_i |G_i| + 1e-7)), one uniform draw U per feature, mask
    M_i = [P > U][G_i > 0] + [P < U][G_i < 0] shared by every sample of the batch, and the update
    Σ_i (leak + (1 - leak) M_i) ∘ ∇_A L_i. ``variant="element"``: P, U and M per coordinate of the raw
    Jacobian (per sample and feature, or per parameter with ``on="params"``; TorchJD ``GradDrop``), the
    only one that applies to parameters. Random draws come from the global torch RNG. A representation in
    several tensors (multi-scale features) is treated as their concatenated features, one draw per
    feature in order (our reading; LibMTL has one tensor)."""

    name = "graddrop"
    paper = "Chen et al., NeurIPS 2020"
    options = {"variant": "paper", "leak": 0.0, "on": "features", "chunk_size": None}
    order_invariant = False
    default_on = "features"
    has_weights = False

    def __init__(self, tasks=None, variant: str = "paper", leak: float = 0.0, on=None, chunk_size=None) -> None:
        super().__init__(tasks, on, chunk_size)
        if not 0 <= leak <= 1:
            raise MtlkitError(f"graddrop: leak must be in [0, 1], got {leak}")
        if variant not in ("paper", "element"):
            raise MtlkitError(f"graddrop: variant must be 'paper' or 'element', got {variant!r}")
        if variant == "paper" and self.on != "features":
            raise MtlkitError("graddrop: variant=paper sums over the batch of the representation and needs "
                              "on=features; use variant=element with on=params")
        self.leak, self.variant = float(leak), variant
        self._layout: list[tuple[int, Tensor]] = []

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import GradDrop as _GradDrop

        return _GradDrop(leak=torch.full((n_tasks,), self.leak) if self.leak else None)

    def prepare(self, tg):
        self._layout = []
        if self.variant == "paper":
            for f in tg.features:  # (batch size, sgn(A) as (batch, features)) per representation tensor
                b = f.shape[0] if f.dim() > 0 else 1
                self._layout.append((b, f.detach().reshape(b, -1).sign()))

    def aggregate(self, jac, gramian):
        if self.variant == "element":
            agg = self.aggregator
            if agg.leak is not None:
                agg.leak = agg.leak.to(device=jac.device, dtype=jac.dtype)
            return agg(jac), None
        t = jac.shape[0]
        blocks, offset = [], 0
        for b, sign in self._layout:
            n = sign.numel()
            blocks.append(jac[:, offset: offset + n].reshape(t, b, -1))
            offset += n
        g = torch.cat([(blk * sign.to(jac.dtype)).sum(1) for blk, (_, sign) in zip(blocks, self._layout,
                                                                                   strict=True)], dim=1)
        p = 0.5 * (1 + g.sum(0) / (g.abs().sum(0) + 1e-7))
        u = torch.rand(p.shape, dtype=jac.dtype, device=jac.device)
        mask = ((p > u) & (g > 0)) | ((p < u) & (g < 0))
        keep = self.leak + (1 - self.leak) * mask.to(jac.dtype)  # (T, features)
        out, col = [], 0
        for blk in blocks:
            m = blk.shape[2]
            out.append((blk * keep[:, None, col: col + m]).sum(0).reshape(-1))
            col += m
        self._layout = []
        return torch.cat(out), None


@BALANCERS.register("imtl")
class IMTL(JacobianAggregator):
    """IMTL (Liu et al., ICLR 2021): IMTL-G weights (the update has equal projections on all task unit
    gradients; TorchJD ``IMTLG``, a pseudo-inverse form of the closed form α = g₁Uᵀ(DUᵀ)⁻¹ of
    AvivNavon/nash-mtl ``methods/weight_methods.py`` ``IMTLG`` and LibMTL ``IMTL.py``; weights sum to 1) on
    the gradients of IMTL-L's scaled losses e^{s_t} L_t - s_t (LibMTL ``IMTL.py``), with learnable s
    (init 0) that the trainer optimises (their gradient e^{s_t} L_t - 1 comes with the backward).
    ``loss_scale=False`` gives IMTL-G alone; ``heads="weights"`` scales the heads by α as nash-mtl does."""

    name = "imtl"
    paper = "Liu et al., ICLR 2021"
    options = {"loss_scale": True, "on": "params", "heads": "own", "engine": "jacobian", "chunk_size": None}

    def __init__(self, tasks=None, loss_scale: bool = True, on=None, heads: str = "own", chunk_size=None,
                 engine: str = "jacobian") -> None:
        super().__init__(tasks, on, chunk_size, heads, engine)
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
    the balance transformation B = √σ V Σ⁻¹ Vᵀ of the Gramian (σ: the smallest eigenvalue for
    ``scale_mode="min"``, the paper's; median or mean otherwise; TorchJD ``AlignedMTL``). ``scale="sum"``
    (default): weights B·1, the aligned gradients summed, as the official SamsungLabs/MTL code
    (``ProcrustesSolver`` then ``grads.sum(-1)``) and LibMTL ``Aligned_MTL.py`` (``alpha = B.sum(0)``);
    ``"mean"``: B·1/T, TorchJD's scale."""

    name = "aligned_mtl"
    paper = "Senushkin et al., CVPR 2023"
    options = {"scale_mode": "min", "scale": "sum", "on": "params", "heads": "own", "engine": "jacobian",
               "chunk_size": None}

    def __init__(self, tasks=None, scale_mode: str = "min", scale: str = "sum", on=None, heads: str = "own",
                 chunk_size=None, engine: str = "jacobian") -> None:
        super().__init__(tasks, on, chunk_size, heads, engine)
        if scale_mode not in ("min", "median", "rmse"):
            raise MtlkitError(f"aligned_mtl: scale_mode must be min, median or rmse, got {scale_mode!r}")
        self.scale_mode, self.scale = scale_mode, _check_scale(self.name, scale)

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import AlignedMTL as _AlignedMTL

        return _AlignedMTL(scale_mode=self.scale_mode)

    def aggregate(self, jac, gramian):
        combined, w = super().aggregate(jac, gramian)
        if self.scale == "sum":
            return combined * jac.shape[0], w * jac.shape[0]
        return combined, w


@BALANCERS.register("nash_mtl")
class NashMTL(JacobianAggregator):
    """Nash-MTL (Navon et al., ICML 2022): the Nash bargaining solution, weights α with (J Jᵀ) α = 1/α.
    ``solver="newton"`` (default): Newton on that equation from the previous step's α (:mod:`._nashsolve`;
    within float64 round-off of the point, ~0.5 ms); ``solver="official"``: the official sequence of convex
    approximations (cvxpy / ECOS; TorchJD ``NashMTL``, defaults of the official AvivNavon/nash-mtl
    ``methods/weight_methods.py``: ``optim_niter`` 20, stop at ||Gα - 1/α|| < 1e-3), which is also the
    fallback when Newton does not converge (a singular G). ``update_weights_every`` k reuses α for k steps
    as the official code. The update is Jᵀα, then the shared gradient is clipped to ``max_norm`` (1.0) by
    ``clip_grad_norm_`` as the official ``NashMTL.backward``; the logged weights are α (before clipping).
    ``heads="weights"`` gives the heads α_t ∇L_t as the official code."""

    name = "nash_mtl"
    paper = "Navon et al., ICML 2022"
    options = {"max_norm": 1.0, "update_weights_every": 1, "optim_niter": 20, "solver": "newton", "on": "params",
               "heads": "own", "engine": "jacobian", "chunk_size": None}
    requires = ("cvxpy", "ecos")

    def __init__(self, tasks=None, max_norm: float = 1.0, update_weights_every: int = 1, optim_niter: int = 20,
                 solver: str = "newton", on=None, heads: str = "own", chunk_size=None,
                 engine: str = "jacobian") -> None:
        super().__init__(tasks, on, chunk_size, heads, engine)
        if not max_norm >= 0:
            raise MtlkitError(f"nash_mtl: max_norm must be >= 0 (0: no clipping), got {max_norm}")
        if solver not in ("newton", "official"):
            raise MtlkitError(f"nash_mtl: solver must be 'newton' or 'official' (cvxpy), got {solver!r}")
        if int(update_weights_every) < 1:
            raise MtlkitError(f"nash_mtl: update_weights_every must be >= 1, got {update_weights_every}")
        self.max_norm, self.every, self.niter = float(max_norm), int(update_weights_every), int(optim_niter)
        self.solver = solver
        self._pending_state: dict[str, Any] | None = None
        self._alpha: Tensor | None = None  # newton: the last α (float64, CPU) and the number of calls
        self._step = 0

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import NashMTL as _NashMTL

        # clipping is ours, on the shared gradient after the backward (the official place and formula); with
        # solver=newton this is only the fallback and solves every time it is asked
        every = self.every if self.solver == "official" else 1
        agg = _NashMTL(n_tasks=n_tasks, max_norm=0.0, update_weights_every=every, optim_niter=self.niter)
        if self._pending_state is not None and self.solver == "official":
            import numpy as np

            wt = agg.weighting
            wt.prvs_alpha = np.asarray(self._pending_state["prvs_alpha"], dtype=np.float64)
            if self._pending_state["step"] > 0:
                wt._init_optim_problem()
                wt.step = float(self._pending_state["step"])
            self._pending_state = None
        return agg

    def _official(self, jac: Tensor, gramian: Tensor) -> tuple[Tensor, Tensor]:
        with warnings.catch_warnings():  # cvxpy: "not DPP" (the official problem formulation; harmless)
            warnings.filterwarnings("ignore", message=".*not DPP.*")
            return super().aggregate(jac, gramian)

    def aggregate(self, jac, gramian):
        if self.solver == "official":
            return self._official(jac, gramian)
        if self._pending_state is not None:
            self._alpha = torch.tensor(self._pending_state["prvs_alpha"], dtype=torch.float64)
            self._step = int(self._pending_state["step"])
            self._pending_state = None
        if self._step % self.every == 0 or self._alpha is None:
            alpha = nash_weights(gramian, self._alpha)
            if alpha is None:  # no positive solution found: the official iteration from the same start
                import numpy as np

                wt = self.aggregator.weighting
                if self._alpha is not None:
                    wt.prvs_alpha = self._alpha.numpy().copy()
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*not DPP.*")
                    alpha = torch.from_numpy(np.asarray(wt(jac.detach().double().cpu()), dtype=np.float64))
            self._alpha = alpha.detach().to(torch.float64).cpu()
        self._step += 1
        w = self._alpha.to(device=jac.device, dtype=jac.dtype)
        return w @ jac, w

    def state_dict(self):
        state = super().state_dict()
        if self.solver == "newton":
            if self._alpha is not None:
                state["nash"] = {"prvs_alpha": [float(x) for x in self._alpha], "step": float(self._step)}
        elif self._agg is not None:
            wt = self._agg.weighting
            state["nash"] = {"prvs_alpha": [float(x) for x in wt.prvs_alpha], "step": float(wt.step)}
        return state

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self._agg, self._alpha, self._step = None, None, 0
        self._pending_state = state.get("nash")


@BALANCERS.register("fairgrad")
class FairGrad(JacobianAggregator):
    """FairGrad (Ban & Ji, ICML 2024): α-fair allocation, weights w with (J Jᵀ) w = w^(-1/α), solved by
    scipy ``least_squares`` from w = 1/T as the official OptMN-Lab/fairgrad ``methods/weight_methods.py``
    (``FairGrad.fairgrad``; TorchJD ``FairGrad``), then polished by Newton steps on the same equation
    (ours: the official solver stops at scipy's default tolerance, up to ~1e-4 from the solution). As that
    code: the update Jᵀw is multiplied by T "to match the sum loss" (``scale="sum"``; ``"mean"`` is
    TorchJD's) and the shared gradient is then clipped to ``max_norm`` 1.0 (``FairGrad.backward``; 0 turns
    it off). α = 1 (proportional fairness) is our default;
    the paper tunes α per benchmark. Logged weights are T·w (``scale="sum"``), before clipping."""

    name = "fairgrad"
    paper = "Ban & Ji, ICML 2024"
    options = {"alpha": 1.0, "max_iters": None, "scale": "sum", "max_norm": 1.0, "on": "params", "heads": "own",
               "engine": "jacobian",
               "chunk_size": None}

    def __init__(self, tasks=None, alpha: float = 1.0, max_iters: int | None = None, scale: str = "sum",
                 max_norm: float = 1.0, on=None, heads: str = "own", chunk_size=None,
                 engine: str = "jacobian"):
        super().__init__(tasks, on, chunk_size, heads, engine)
        if not alpha > 0:
            raise MtlkitError(f"fairgrad: alpha must be > 0, got {alpha}")
        if not max_norm >= 0:
            raise MtlkitError(f"fairgrad: max_norm must be >= 0 (0: no clipping), got {max_norm}")
        self.alpha, self.max_iters = float(alpha), max_iters
        self.scale, self.max_norm = _check_scale(self.name, scale), float(max_norm)

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import FairGrad as _FairGrad

        return _FairGrad(alpha=self.alpha, max_iters=self.max_iters)

    def aggregate(self, jac, gramian):
        from torchjd.aggregation import GramianWeightedAggregator

        agg = self.aggregator
        assert isinstance(agg, GramianWeightedAggregator)
        w = self.polish(gramian, agg.gramian_weighting(gramian)).to(jac.dtype)
        if self.scale == "sum":
            w = w * jac.shape[0]
        return w @ jac, w

    def polish(self, gramian: Tensor, w: Tensor, steps: int = 8) -> Tensor:
        """Newton steps on Gw - w^(-1/α) = 0 from the least-squares solution, kept while the residual falls
        and w stays positive (ours: the official solver stops at scipy's default tolerance, ~1e-5)."""
        g = gramian.detach().to(torch.float64).cpu()
        x = w.detach().to(torch.float64).cpu()
        if not bool((x > 0).all()):
            return w
        p = -1.0 / self.alpha

        def residual(v: Tensor) -> Tensor:
            return g @ v - v.pow(p)

        r = residual(x)
        for _ in range(steps):
            try:
                step = torch.linalg.solve(g + torch.diag(-p * x.pow(p - 1)), -r)
            except RuntimeError:
                break
            new = x + step
            if not bool((new > 0).all()):
                break
            r_new = residual(new)
            if not float(r_new.norm()) < float(r.norm()):
                break
            x, r = new, r_new
        return x.to(device=w.device, dtype=w.dtype)


@BALANCERS.register("upgrad")
class UPGrad(JacobianAggregator):
    """UPGrad (Quinton & Rey, 2024, Jacobian Descent): project each task gradient onto the dual cone of all
    of them and average (TorchJD ``UPGrad``, the authors' own code, ``torchjd/aggregation/_upgrad.py``; a
    quadprog QP per step)."""

    name = "upgrad"
    paper = "Quinton & Rey, arXiv 2406.16232"
    options = {"on": "params", "heads": "own", "engine": "jacobian", "chunk_size": None}
    requires = ("qpsolvers", "quadprog")

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import UPGrad as _UPGrad

        return _UPGrad()


@BALANCERS.register("dualproj")
class DualProj(JacobianAggregator):
    """DualProj (the A-GEM-style projection of the mean gradient onto the dual cone of the task gradients;
    Lopez-Paz & Ranzato 2017, as formulated by Quinton & Rey 2024; TorchJD ``DualProj``,
    ``torchjd/aggregation/_dualproj.py``: the mean gradient projected)."""

    name = "dualproj"
    paper = "Lopez-Paz & Ranzato, NeurIPS 2017 / Quinton & Rey 2024"
    options = {"on": "params", "heads": "own", "engine": "jacobian", "chunk_size": None}
    requires = ("qpsolvers", "quadprog")

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import DualProj as _DualProj

        return _DualProj()


@BALANCERS.register("gradvac")
class GradVac(JacobianAggregator):
    """Gradient Vaccine (Wang et al., ICLR 2021; no official code): raise each pair's cosine towards an EMA
    target φ̂ (decay ``beta``, targets start at 0), in random order, and sum (TorchJD ``GradVac``; LibMTL
    ``GradVac.py`` with ``group_type`` whole_model; their default beta 0.5)."""

    name = "gradvac"
    paper = "Wang et al., ICLR 2021"
    options = {"beta": 0.5, "on": "params", "heads": "own", "engine": "jacobian", "chunk_size": None}
    order_invariant = False

    def __init__(self, tasks=None, beta: float = 0.5, on=None, heads: str = "own", chunk_size=None,
                 engine: str = "jacobian") -> None:
        super().__init__(tasks, on, chunk_size, heads, engine)
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
