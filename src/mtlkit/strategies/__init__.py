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


def _table_rows() -> list[tuple[str, str, str, str]]:
    return [(n, "strategy", getattr(STRATEGIES.get(n), "paper", "") or "-",
             ", ".join(f"{k}={v}" for k, v in getattr(STRATEGIES.get(n), "options", {}).items()))
            for n in STRATEGIES.names()]


def _table_notes() -> list[str]:
    return [f"{n}: {STRATEGIES.get(n).notes}" for n in STRATEGIES.names() if getattr(STRATEGIES.get(n), "notes", "")]


def _register_table_rows() -> None:
    from mtlkit.balancing._options import TABLE_NOTES, TABLE_ROWS

    if _table_rows not in TABLE_ROWS:
        TABLE_ROWS.append(_table_rows)
    if _table_notes not in TABLE_NOTES:
        TABLE_NOTES.append(_table_notes)


_register_table_rows()
