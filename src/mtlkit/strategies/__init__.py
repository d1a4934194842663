"""Update strategies: joint (one step per batch) and selective task group updates (K steps per batch)."""

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

__all__ = ["STRATEGIES", "Joint", "StepContext", "Strategy", "all_finite", "balanced_backward", "compute_losses", "get"]
