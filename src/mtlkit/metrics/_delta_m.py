"""Δm (Maninis et al. 2019): mean relative gain over single-task baselines, in %.

Δm = (1/T) Σ_t (-1)^{l_t} (M_m,t - M_b,t) / M_b,t × 100, with l_t = 1 when lower is better.
"""

from __future__ import annotations

from collections.abc import Mapping

from mtlkit.errors import MtlkitError, UnknownNameError


def relative_gain(value: float, baseline: float, higher_is_better: bool) -> float:
    """Gain of one task over its baseline in % (positive = better than the baseline)."""
    if baseline == 0:
        raise MtlkitError("Δm is undefined for a baseline metric of 0; check the single-task baseline's metrics")
    sign = 1.0 if higher_is_better else -1.0
    return sign * (value - baseline) / abs(baseline) * 100.0


def delta_m(
    values: Mapping[str, float], baselines: Mapping[str, float], higher_is_better: Mapping[str, bool]
) -> float:
    """Δm over the tasks of ``values``; every one must have a baseline."""
    missing = [t for t in values if t not in baselines]
    if missing:
        # a KeyError (as before) and an MtlkitError (a user error: the baseline run lacks these tasks)
        raise UnknownNameError(
            f"no single-task baseline for task(s): {', '.join(missing)}; train a single-task baseline for each "
            f"(baselines given: {', '.join(baselines) or 'none'})"
        )
    if not values:
        raise MtlkitError("Δm needs at least one task")
    gains = [relative_gain(values[t], baselines[t], higher_is_better[t]) for t in values]
    return sum(gains) / len(gains)
