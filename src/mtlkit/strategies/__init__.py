"""Update strategies: joint (one step per batch) and selective task group updates (K steps per batch)."""

from mtlkit.strategies._affinity import ProximalAffinity
from mtlkit.strategies._base import (
    STRATEGIES,
    Joint,
    StepContext,
    Strategy,
    all_finite,
    balanced_backward,
    compute_losses,
    get,
)
from mtlkit.strategies._grouping import (
    affinity_groups,
    joint_groups,
    normalized_affinity,
    order_groups,
    random_groups,
    separate_groups,
)
from mtlkit.strategies._selective import Selective

__all__ = [
    "STRATEGIES",
    "Joint",
    "ProximalAffinity",
    "Selective",
    "StepContext",
    "Strategy",
    "affinity_groups",
    "all_finite",
    "balanced_backward",
    "compute_losses",
    "get",
    "joint_groups",
    "normalized_affinity",
    "order_groups",
    "random_groups",
    "separate_groups",
]
