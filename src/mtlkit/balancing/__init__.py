"""Balancing methods: loss weightings and gradient aggregators behind one registry and interface.

``get(name, tasks, **options)`` builds one; ``balancer.backward(losses, shared=..., features=...)`` fills
``.grad`` and returns what it decided (weights, gradient norms, conflicts) for logging.
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
    "parse_method_options",
    "task_jacobian",
]
