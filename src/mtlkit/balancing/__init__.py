"""Balancing methods: loss weightings and gradient aggregators behind one registry and interface.

``get(name, tasks, **options)`` builds one; ``balancer.backward(losses, shared=..., features=...)`` fills
``.grad`` and returns what it decided (weights, gradient norms, conflicts) for logging. The trainer calls
``balancer.setup(epoch_iters=...)`` once before training and writes ``balancer.report()`` into
``metrics.json`` (``"method_report"``).

Scale convention (one for all methods): by default every method's update has the scale of its official
implementation, the code the papers' baselines were run from. For most methods that is the scale of the
summed loss Σ_t L_t that ``equal`` optimises; in particular ``cagrad``, ``fairgrad`` and ``aligned_mtl``
multiply the aggregated gradient by T as their official code does (TorchJD returns the mean-gradient
scale), and ``fairgrad``, ``nash_mtl`` and ``famo`` clip the shared gradient norm at ``max_norm`` 1.0 as
theirs do. Where TorchJD / LibMTL use another scale, ``scale="mean"`` (``cagrad``, ``fairgrad``,
``aligned_mtl``) and ``max_norm=0`` give it. Each method's docstring names the code it matches
(repository and file); ``tests/balancing/test_reference_parity.py`` checks every method against an
independent implementation of that formula (table: ``benchmarks/results/parity.md``).

Mixed precision (the one interface for a GradScaler): pass the scaler (or its ``get_scale()``) as
``grad_scale`` and the *unscaled* losses::

    info = balancer.backward(losses, shared=..., features=..., grad_scale=scaler)
    scaler.step(optimizer)
    scaler.update()

The balancer back-propagates S times its objective, so every ``.grad`` it writes (the model's and its own
learnable parameters', e.g. UW's log-variances or GradNorm's weights) is S times the fp32 update, the form
``scaler.unscale_`` / ``scaler.step`` expect. Everything it decides from gradients (norms, Gramians,
QP / convex solver inputs, GradDrop's signs) it computes on the per-task gradients cast to at least
float32 and divided by S, and ``max_norm`` clipping acts on the unscaled norm: the decisions are those of
the fp32 step (``tests/balancing/test_grad_scale.py``, every method). A per-task gradient that is
non-finite under a scale is an overflow: the method takes no decision (its state is untouched), reports
``"overflow": 1`` and leaves a non-finite ``.grad``, so the scaler skips the step and lowers S. Loss-value
methods (UW, DWA, DTP, RLW, GLS, FAMO) see the unscaled losses. Without ``grad_scale`` nothing changes;
half-precision per-task gradients are cast to float32 for the decisions either way.
"""

from mtlkit.balancing._aggregators import (
    IMTL,
    MGDA,
    MGDAUB,
    AlignedMTL,
    CAGrad,
    DualProj,
    FairGrad,
    GradDrop,
    GradVac,
    JacobianAggregator,
    NashMTL,
    PCGrad,
    UPGrad,
)
from mtlkit.balancing._avgnorm import AvgNorm
from mtlkit.balancing._base import BALANCERS, Balancer, Equal, Fixed, Losses, WeightedSum, get
from mtlkit.balancing._famo import FAMO
from mtlkit.balancing._gradnorm import GradNorm
from mtlkit.balancing._grads import TaskGradients, task_jacobian
from mtlkit.balancing._gradweighting import GradientLossWeighting
from mtlkit.balancing._minnorm import min_norm_weights
from mtlkit.balancing._options import methods_table, parse_method_options
from mtlkit.balancing._weightings import (
    DynamicTaskPrioritization,
    DynamicWeightAverage,
    GeometricLossStrategy,
    RandomLossWeighting,
    UncertaintyWeighting,
)

__all__ = [
    "BALANCERS",
    "FAMO",
    "IMTL",
    "MGDA",
    "MGDAUB",
    "AlignedMTL",
    "AvgNorm",
    "Balancer",
    "CAGrad",
    "DualProj",
    "DynamicTaskPrioritization",
    "DynamicWeightAverage",
    "Equal",
    "FairGrad",
    "Fixed",
    "GeometricLossStrategy",
    "GradDrop",
    "GradNorm",
    "GradVac",
    "GradientLossWeighting",
    "JacobianAggregator",
    "Losses",
    "NashMTL",
    "PCGrad",
    "RandomLossWeighting",
    "TaskGradients",
    "UPGrad",
    "UncertaintyWeighting",
    "WeightedSum",
    "get",
    "methods_table",
    "min_norm_weights",
    "parse_method_options",
    "task_jacobian",
]
